"""fpsim.torch._settings: fp32_matmul sets every fp32 precision flag for its block and restores each as the user
set it (legacy and per-backend APIs alike); first_line names an error in one line."""

import pytest
import torch


def _fp32_state() -> tuple:
    """Every reader of torch's fp32 precision state, legacy and per backend ("raises" where torch refuses)."""
    backends = torch.backends

    def read(getter):
        try:
            return getter()
        except RuntimeError:
            return "raises"

    legacy = (torch.get_float32_matmul_precision, lambda: backends.cuda.matmul.allow_tf32,
              lambda: backends.cudnn.allow_tf32)  # fmt: skip
    per_backend = [backends, backends.cudnn, backends.cudnn.conv, backends.cudnn.rnn, backends.cuda.matmul,
                   backends.mkldnn, backends.mkldnn.matmul, backends.mkldnn.conv, backends.mkldnn.rnn]  # fmt: skip
    return tuple(read(g) for g in legacy) + tuple(read(lambda b=b: b.fp32_precision) for b in per_backend)


@pytest.fixture
def fp32_defaults():
    """Leave torch's precision state readable and at its default behaviour for the tests after this one."""
    yield
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = True
    assert torch.get_float32_matmul_precision() == "highest"


def _medium():
    torch.set_float32_matmul_precision("medium")


def _legacy_tf32():
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = False


def _per_backend_tf32():
    torch.backends.cuda.matmul.fp32_precision = "tf32"


@pytest.mark.parametrize("set_by_user", [_medium, _legacy_tf32, _per_backend_tf32])
@pytest.mark.parametrize("tf32", [False, True])
def test_fp32_matmul_restores_every_precision_flag_as_the_user_set_it(fp32_defaults, set_by_user, tf32):
    from fpsim.torch._settings import fp32_matmul

    torch.set_float32_matmul_precision("highest")
    set_by_user()
    before = _fp32_state()
    with fp32_matmul(tf32):
        inside = [b.fp32_precision for b in (torch.backends.cuda.matmul, torch.backends.cudnn.conv,
                                             torch.backends.mkldnn.matmul)]  # fmt: skip
    assert inside == ["tf32" if tf32 else "ieee"] * 3
    assert _fp32_state() == before
    if set_by_user is _medium:
        assert before[0] == "medium"  # readable after the block: no "mix of the legacy and new APIs"


def test_first_line_is_the_type_and_the_first_line_of_the_message():
    from fpsim.torch._settings import first_line

    assert first_line(RuntimeError("mat1 and mat2 shapes cannot be multiplied\n  at frame 3")) == (
        "RuntimeError: mat1 and mat2 shapes cannot be multiplied")  # fmt: skip
    assert first_line(ValueError()) == "ValueError"
