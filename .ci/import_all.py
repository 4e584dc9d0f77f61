"""Import every module of an installed scld_aug (a wheel, not the checkout): what a user
who installed the package gets must import, data files and all."""

import importlib
import pkgutil

import scld_aug

assert "site-packages" in scld_aug.__file__, scld_aug.__file__
# __main__ runs the command line.
names = [
    m.name
    for m in pkgutil.walk_packages(scld_aug.__path__, "scld_aug.")
    if not m.name.endswith("__main__")
]
for name in names:
    importlib.import_module(name)
print(
    f"imported {len(names)} modules of scld_aug {scld_aug.__version__} from {scld_aug.__path__[0]}"
)
print("shipped data:", scld_aug.datasets.baron_pancreas().shape)
