"""DDPM noise schedule with deterministic sampler steps (DDIM, DPM-Solver++(2M)): a small
stateless object, as in diffusers, whose sampling loop belongs to the caller
(:mod:`scld_aug.sampling`)."""

from __future__ import annotations

import math

import torch


class NoiseSchedule:
    """Variance schedule of the forward process and the reverse DDIM update.

    Parameters
    ----------
    num_train_timesteps : int
        Number of diffusion steps used in training.
    beta_schedule : {"cosine", "linear"}
        ``"cosine"`` follows Nichol & Dhariwal (2021); ``"linear"`` Ho et al. (2020).
    clip_sample_range : float or None
        Bound on the predicted clean sample during sampling. At the noisiest steps
        ``x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)`` divides by a tiny
        ``sqrt(alpha_bar)`` and amplifies any error of ``eps`` (by ~2e4 at t=999 with the
        cosine schedule); clipping to the data's range keeps the trajectory on the data.

    Examples
    --------
    >>> import torch
    >>> schedule = NoiseSchedule(100)
    >>> x0 = torch.zeros(4, 2)
    >>> noisy = schedule.add_noise(x0, torch.ones(4, 2), torch.tensor([99, 99, 0, 0]))
    >>> schedule.timesteps(10)
    [99, 89, 79, 69, 59, 49, 39, 29, 19, 9]
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "cosine",
        clip_sample_range: float | None = None,
    ) -> None:
        self.num_train_timesteps = num_train_timesteps
        self.clip_sample_range = clip_sample_range
        self.beta_schedule = beta_schedule
        if beta_schedule == "cosine":
            steps = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
            f = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        elif beta_schedule == "linear":
            betas = torch.linspace(1e-4, 0.02, num_train_timesteps, dtype=torch.float64)
        else:
            raise ValueError(f"beta_schedule must be 'cosine' or 'linear', got {beta_schedule!r}.")
        self.alphas_cumprod_f64 = torch.cumprod(1 - betas, dim=0)
        self.alphas_cumprod = self.alphas_cumprod_f64.float()
        # A memo of alphas_cumprod per device and dtype (not state: results never depend on it).
        self._alpha_bar_cache: dict = {}

    def _alpha_bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        # One copy per device and dtype, cast on the CPU first: MPS has no float64.
        key = (like.device, like.dtype)
        if key not in self._alpha_bar_cache:
            self._alpha_bar_cache[key] = self.alphas_cumprod_f64.to(like.dtype).to(like.device)
        return self._alpha_bar_cache[key][t].reshape(-1, *([1] * (like.dim() - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Sample ``x_t ~ q(x_t | x_0)`` for a batch of timesteps ``t``."""
        ab = self._alpha_bar(t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def noise_level(self, t: int) -> float:
        """``sqrt(1 - alpha_bar_t)``: the factor that turns a score into a noise correction."""
        return float((1 - self.alphas_cumprod[t]).sqrt())

    def timesteps(self, num_inference_steps: int) -> list[int]:
        """``num_inference_steps`` evenly spaced timesteps, descending, ending near ``t = 0``.

        The schedule keeps no state: the caller owns the loop and passes each step's
        timestep and the next one (:meth:`step`).
        """
        if not 1 <= num_inference_steps <= self.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be in [1, {self.num_train_timesteps}], "
                f"got {num_inference_steps}."
            )
        ratio = self.num_train_timesteps / num_inference_steps
        steps = torch.round(torch.arange(self.num_train_timesteps, 0, -ratio)).long() - 1
        return steps.tolist()

    def step(
        self, noise_pred: torch.Tensor, t: int, x_t: torch.Tensor, prev_t: int
    ) -> torch.Tensor:
        """Deterministic DDIM update (eta = 0) from ``x_t`` at ``t`` to ``prev_t`` (the next
        timestep of the caller's loop; -1 for the clean sample)."""
        ab_t = float(self.alphas_cumprod_f64[t])
        ab_prev = float(self.alphas_cumprod_f64[prev_t]) if prev_t >= 0 else 1.0
        if self.clip_sample_range is None:
            # x0 folded into two float64 scalars, so no tiny sqrt(ab_t) divides in float32.
            coef_x = math.sqrt(ab_prev / ab_t)
            coef_eps = math.sqrt(1 - ab_prev) - math.sqrt(ab_prev * (1 - ab_t) / ab_t)
            return coef_x * x_t + coef_eps * noise_pred
        x0 = self.predict_x0(noise_pred, t, x_t)
        # Re-derive the noise from the clipped x0 (as diffusers does) to stay consistent.
        eps = (x_t - math.sqrt(ab_t) * x0) / math.sqrt(1 - ab_t)
        return math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps

    def predict_x0(self, noise_pred: torch.Tensor, t: int, x_t: torch.Tensor) -> torch.Tensor:
        """The clean sample implied by a noise prediction (clipped when the schedule clips)."""
        ab_t = float(self.alphas_cumprod_f64[t])
        x0 = (x_t - math.sqrt(1 - ab_t) * noise_pred) / math.sqrt(ab_t)
        if self.clip_sample_range is not None:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        return x0

    def _log_snr(self, t: int) -> float:
        """``lambda_t = log(alpha_t / sigma_t)``: DPM-Solver's time variable."""
        ab = float(self.alphas_cumprod_f64[t])
        return 0.5 * (math.log(ab) - math.log1p(-ab))

    def dpm_solver_step(
        self,
        x0: torch.Tensor,
        t: int,
        x_t: torch.Tensor,
        prev_t: int,
        earlier: tuple[torch.Tensor, int] | None = None,
    ) -> torch.Tensor:
        """DPM-Solver++(2M) update (Lu et al. 2022) from ``x_t`` at ``t`` to ``prev_t``.

        ``x0`` is this step's clean-sample prediction (:meth:`predict_x0`); ``earlier`` the
        previous step's ``(x0, t)``, which makes the update second order (without it, it is
        exactly the DDIM step). The last step to the clean sample (``prev_t = -1``) returns
        ``x0``, as DDIM does.
        """
        if prev_t < 0:
            return x0
        ab_t = float(self.alphas_cumprod_f64[t])
        ab_prev = float(self.alphas_cumprod_f64[prev_t])
        lam_t, lam_prev = self._log_snr(t), self._log_snr(prev_t)
        h = lam_prev - lam_t
        # x_prev = (sigma_prev / sigma_t) x_t + alpha_prev (1 - e^-h) D, in float64 scalars.
        coef_x = math.sqrt((1 - ab_prev) / (1 - ab_t))
        coef_d = math.sqrt(ab_prev) * -math.expm1(-h)
        if earlier is None:
            return coef_x * x_t + coef_d * x0
        x0_earlier, t_earlier = earlier
        r = (lam_t - self._log_snr(t_earlier)) / h
        d = (1 + 0.5 / r) * x0 - (0.5 / r) * x0_earlier
        return coef_x * x_t + coef_d * d
