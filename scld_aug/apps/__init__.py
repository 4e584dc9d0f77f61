"""Applications built on the library: the ``scld-aug`` command line (:mod:`.cli`), the
augmentation of ``.h5ad`` files behind ``scld-aug augment`` (:mod:`.augment`) and the demo
(:mod:`.demo`). They use the library's public pieces; the library never imports them."""
