"""The kernel of privbench: what every room (``bench``, ``targets``, ``defenses``, ``attacks``) may import and
which imports none of them.

* :mod:`privkernel.errors`: :class:`BenchError`, the one-line user error, and ``did_you_mean``;
* :mod:`privkernel.hashing`: canonical JSON, ``stable_hash`` and ``derive_seed``;
* :mod:`privkernel.registry`: the component registries, typed ``Param`` and typed tags.
"""
