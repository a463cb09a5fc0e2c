import numpy as np
import pytest
import torch
from torch import nn

from xailab import utils


def test_check_fraction_names_argument():
    assert utils.check_fraction("fraction", 0.3) == 0.3
    with pytest.raises(ValueError, match="fraction must be a fraction in \\[0, 1\\]"):
        utils.check_fraction("fraction", 1.5)
    with pytest.raises(ValueError, match="sparsity .*\\[0, 1\\)"):
        utils.check_fraction("sparsity", 1.0, closed_right=False)


def test_as_targets_checks_length_and_range():
    assert utils.as_targets(2, 3).tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="target must be an int or a tensor of 3"):
        utils.as_targets([0, 1], 3)
    with pytest.raises(ValueError, match="target must lie in \\[0, 3\\]"):
        utils.as_targets([0, 4, 1], 3, num_classes=4)


def test_preserved_state_restores_on_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    model.eval()
    with pytest.raises(RuntimeError):
        with utils.preserved_state(model):
            model.train()
            for p in model.parameters():
                p.requires_grad_(False)
            raise RuntimeError("boom")
    assert not any(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_require_eval_refuses_train_mode():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="train mode"):
        utils.require_eval(model)
    utils.require_eval(model.eval())


def test_seeded_generator_is_reproducible():
    a = torch.rand(4, generator=utils.seeded_generator(3))
    b = torch.rand(4, generator=utils.seeded_generator(3))
    assert torch.equal(a, b)


def test_forked_rng_seeds_and_restores_both_generators():
    torch.manual_seed(123), np.random.seed(123)
    before_t, before_n = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    with utils.forked_rng(7, numpy=True):
        a = (torch.rand(3), np.random.rand(3))
    with utils.forked_rng(7, numpy=True):
        b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and (a[1] == b[1]).all()
    assert torch.equal(before_t, torch.random.get_rng_state())
    assert (before_n == np.random.get_state()[1]).all()


def test_derive_seed_is_a_fixed_hash_of_the_names():
    from xailab.utils import derive_seed

    a = derive_seed(0, "ROAR-1", "cell", 3)
    assert a == derive_seed(0, "ROAR-1", "cell", 3) and 0 <= a < 2 ** 31
    assert len({derive_seed(s, "ROAR-1", r) for s in range(5) for r in range(8)}) == 40   # distinct streams
    assert derive_seed(1, "x") != derive_seed(0, "x") and derive_seed(0, "x", 1) != derive_seed(0, "x", "1")
    assert derive_seed(0, "GEN", 2) == 536918756         # the same number on every machine and process


def test_atomic_file_replaces_or_leaves_the_old_file(tmp_path):
    from xailab.utils import atomic_file, write_atomic

    target = tmp_path / "out.txt"
    write_atomic(target, "old")
    with pytest.raises(KeyError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise KeyError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
