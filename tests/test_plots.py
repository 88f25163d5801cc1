"""Figures on the Agg backend: each is created, its geometry is right, its numbers match the codec's."""

import io

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

import fpsim
from fpsim import plots
from fpsim.cli import main
from fpsim.plots.style import policy_style, style
from fpsim.train import Config, run


def bar_span(ax, gid):
    (patch,) = [p for p in ax.patches if p.get_gid() == gid]
    return patch.get_x(), patch.get_x() + patch.get_width()


def test_range_diagram_bars_span_the_formats_exact_range():
    _, ax = plots.range_diagram(["fp32", "fp16", "bf16", "e4m3"])
    low, _ = bar_span(ax, "fp16:subnormal")
    start, top = bar_span(ax, "fp16:normal")
    assert (low, start) == (-24.0, -14.0) and top == pytest.approx(np.log2(65504.0), rel=1e-15)
    assert bar_span(ax, "fp8_e4m3:normal") == pytest.approx((-6.0, np.log2(448.0)), rel=1e-15)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["fp8_e4m3", "bf16", "fp16", "fp32"]


def test_number_line_draws_every_non_negative_value():
    _, (linear, logarithmic) = plots.number_line("fp8_e4m3")
    points = {line.get_gid(): len(line.get_xdata()) for line in linear.lines}
    assert points["normal"] + points["subnormal"] == 127  # codes 0 to 0x7e: zero, 7 subnormals, 119 normals
    assert points["subnormal"] == 7
    assert sum(len(line.get_xdata()) for line in logarithmic.lines) == 126  # zero has no place on a log axis
    with pytest.raises(ValueError, match="at most 10 bits"):
        plots.number_line("fp16")


def test_gradient_bands_equal_the_codecs_flag_counts():
    g = np.random.default_rng(0).lognormal(-17, 4, 50_000) * np.random.default_rng(1).choice([-1, 1], 50_000)
    for fmt in ("fp16", "bf16", "e5m2", "e4m3"):
        bands = plots.gradient_bands(g, fmt)
        _, flags = fpsim.round(g, fmt, flags=True)
        assert bands["flush"] == flags.flushed_to_zero / g.size
        assert bands["subnormal"] == flags.subnormal / g.size
        assert bands["overflow"] == flags.overflow / g.size
        assert sum(bands.values()) == pytest.approx(1.0)


FORMATS_WITH_EDGES = [
    "fp16", "bf16", "e4m3", "e5m2", "fp4", "e2m3", "e3m2",
    fpsim.Format("fp16_ftz", 5, 10, subnormals=False),
    fpsim.Format("e4m3_ftz", 4, 3, has_inf=False, nan="all_ones", subnormals=False),
    fpsim.Format("e2m0", 2, 0, has_inf=False, nan="none"),
]  # fmt: skip


@pytest.mark.parametrize("fmt", FORMATS_WITH_EDGES, ids=str)
def test_gradient_bands_at_every_threshold_and_tie(fmt):
    fmt = fpsim.get_format(fmt)
    values = fpsim.decode(np.arange(fmt.max_code + 1), fmt)
    ties = np.append(values[1:] / 2 + values[:-1] / 2, fmt.max + fmt.ulp(fmt.max) / 2)  # every midpoint, past max too
    x = np.concatenate([ties, np.nextafter(ties, 0), np.nextafter(ties, np.inf)])
    x = np.concatenate([x, -x, [0.75 * fmt.smallest_normal, 0.0]])
    bands = plots.gradient_bands(x, fmt)
    _, flags = fpsim.round(x, fmt, overflow=None if fmt.has_inf else "saturate", flags=True)
    counts = {name: round(bands[name] * x.size) for name in ("flush", "subnormal", "overflow")}
    assert counts == {"flush": flags.flushed_to_zero, "subnormal": flags.subnormal, "overflow": flags.overflow}


def test_gradient_histogram_has_a_scaled_panel():
    g = np.random.default_rng(0).normal(0, 1e-6, 5000)
    _, axes = plots.gradient_histogram(g, "fp16", scale=1024)
    assert len(axes) == 2 and "1024" in axes[1].get_title()
    texts = [t.get_text() for t in axes[0].texts]
    bands = plots.gradient_bands(g, "fp16")
    assert f"flushed {bands['flush']:.1%}" in texts[0]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: plots.gradient_histogram([], "fp16"), "values is empty"),
        (lambda: plots.gradient_histogram(np.zeros(10), "fp16"), "no finite nonzero gradient"),
        (lambda: plots.gradient_histogram([1e-6], "fp16", scale=-1.0), "scale must be"),
        (lambda: plots.range_diagram([]), "formats must name at least one format"),
        (lambda: plots.rounding_error("fp16", modes=["sideways"]), "modes must be"),
        (lambda: plots.rounding_error("fp16", low=2.0, high=1.0), "high must be greater than low"),
        (lambda: plots.loss_curves([]), "histories must be one or more History"),
        (lambda: plots.number_line("e4m3", ax=plots.range_diagram()[1]), "ax must be a pair of Axes"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_precision_diagram_spans_fp64_without_overflow():
    figure, ax = plots.precision_diagram(["fp64", "fp32"])
    assert ax.lines[0].get_xdata().max() == np.log2(fpsim.FP64.max) and ax.lines[0].get_xdata().min() == -1074
    figure.savefig(io.BytesIO(), format="png")  # drawing raises no overflow warning


def test_precision_bits_and_rounding_figures():
    _, ax = plots.precision_diagram(["fp16", "bf16"])
    fp16 = ax.lines[0]
    relative = fp16.get_ydata()  # log2 of ulp/x
    assert relative.max() == 0.0 and relative[fp16.get_xdata() >= -14].max() == -10  # eps at each binade start
    _, ax = plots.bit_layout(0.1, "fp16")
    colours = [p.get_gid() for p in ax.patches]
    assert colours == ["sign"] + ["exponent"] * 5 + ["mantissa"] * 10
    assert "".join(t.get_text() for t in ax.texts[: 1 + 5 + 10 + 3] if t.get_text() in "01") == "0010111001100110"
    _, ax = plots.rounding_error("fp16", modes=["nearest_even", "stochastic"])
    nearest = ax.lines[0].get_ydata()
    assert np.abs(nearest).max() <= 0.5 and len(ax.collections) == 1  # the stochastic band


def test_training_figures_read_histories():
    runs = [run(Config(policy=p, steps=12, loss_scale=2.0**30)) for p in ("fp32", "amp")]
    _, (loss, scale, _flushed) = plots.training_figure(runs)
    (marks,) = [line for line in scale.lines if line.get_gid() == "amp:skipped"]
    assert len(marks.get_xdata()) == sum(runs[1].skipped) > 0
    assert [line.get_label() for line in loss.lines] == ["fp32", "amp"]
    _, ax = plots.simulator_vs_hardware(runs[0], runs[1])
    assert [line.get_linestyle() for line in ax.lines] == ["-", "--"]


def test_styles_are_stable_per_format_and_policy():
    assert style("fp16") == style("half") != style("bf16")
    looks = [tuple(map(str, style(f).values())) for f in fpsim.PRESETS]
    assert len(set(looks)) == len(looks)  # every preset has a look of its own
    assert policy_style("amp") == policy_style("amp") != policy_style("fp16")


@pytest.mark.parametrize("kind", ["range", "precision", "numberline", "bits", "rounding"])
def test_cli_writes_each_kind(tmp_path, capsys, kind):
    out = tmp_path / f"{kind}.svg"
    assert main(["plot", kind, "-o", str(out)]) == 0
    assert out.stat().st_size > 1000 and out.read_text().startswith("<?xml")


def test_cli_histogram_and_training_from_a_results_file(tmp_path, capsys):
    results = tmp_path / "runs.json"
    assert main(["train", "-p", "fp32,amp", "--steps", "10", "-q", "-o", str(results)]) == 0
    for kind in ("histogram", "training"):
        out = tmp_path / f"{kind}.png"
        assert main(["plot", kind, "--from", str(results), "--scale", "1024", "-o", str(out)]) == 0
        assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plot", "pie"], "invalid choice: 'pie'"),
        (["plot", "range", "-o", "/nonexistent/folder/x.png"], "not a writable folder"),
        (["plot", "range", "-o", "x.gif"], "-o must end in .png, .svg or .pdf"),
        (["plot", "histogram", "--from", "/nonexistent.json"], "no such file"),
        (["plot", "histogram", "--from", "EMPTY"], "not an fpsim results file with runs"),
    ],
)
def test_cli_bad_input(capsys, tmp_path, argv, message):
    empty = tmp_path / "empty.json"
    empty.write_text('{"runs": []}')
    assert main([str(empty) if arg == "EMPTY" else arg for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_gallery_images_are_small_and_present():
    from pathlib import Path

    gallery = Path(__file__).parent.parent / "docs" / "gallery"
    images = sorted(gallery.glob("*.png"))
    assert len(images) >= 8 and all(image.stat().st_size < 200_000 for image in images)
