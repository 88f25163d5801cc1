"""Figures on the Agg backend: each is created, its geometry is right, its numbers match the codec's, and the
lesson is visible (marks, labels, legends clear of the data, one panel per format)."""

import dataclasses
import errno
import io
import json
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import fpsim
from fpsim import plots
from fpsim.cli import main
from fpsim.plots.style import policy_style, style
from fpsim.train import History, scenario


def bar_span(ax, gid):
    (patch,) = [p for p in ax.patches if p.get_gid() == gid]
    return patch.get_x(), patch.get_x() + patch.get_width()


def drawn(figure):
    """The renderer of the figure, drawn once on an Agg canvas (layout done, text sizes known)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def extents(figure, artists):
    renderer = drawn(figure)
    return [a.get_window_extent(renderer) for a in artists]


def overlaps(boxes):
    return [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes[i + 1 :], i + 1) if a.overlaps(b)]


# ---- range ----------------------------------------------------------------------------------------------------


def test_range_diagram_bars_span_the_formats_exact_range():
    _, ax = plots.range_diagram(["fp32", "fp16", "bf16", "e4m3"])
    low, _ = bar_span(ax, "fp16:subnormal")
    start, top = bar_span(ax, "fp16:normal")
    assert (low, start) == (-24.0, -14.0) and top == pytest.approx(np.log2(65504.0), rel=1e-15)
    assert bar_span(ax, "fp8_e4m3:normal") == pytest.approx((-6.0, np.log2(448.0)), rel=1e-15)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["fp8_e4m3", "bf16", "fp16", "fp32"]
    assert all(not p.get_hatch() for p in ax.patches)  # no per-format hatching left to explain


@pytest.mark.parametrize("fmt", ["e4m3", "fp4", "e2m0", "fp6_e2m3", "fp32"])
def test_range_labels_are_superscripts_that_do_not_collide(fmt):
    figure, ax = plots.range_diagram([fmt, "fp16"])
    name = fpsim.get_format(fmt).name
    labels = [t for t in ax.texts if t.get_gid() == f"{name}:label"]
    assert labels and all("^" not in t.get_text() or t.get_text().startswith("$") for t in labels)
    assert f"$2^{{{fpsim.get_format(fmt).emin}}}$" in [t.get_text() for t in labels]
    assert overlaps(extents(figure, labels)) == []


@pytest.mark.parametrize("fmt", ["fp4", "fp6_e2m3", "e2m0"])
def test_range_label_of_a_least_normal_of_1_stays_off_the_dashed_line(fmt):
    figure, ax = plots.range_diagram([fmt, "fp16"])
    name = fpsim.get_format(fmt).name
    (label,) = [t for t in ax.texts if t.get_gid() == f"{name}:label" and t.get_text() == "$2^{0}$"]
    (box,) = extents(figure, [label])
    line_x = ax.transData.transform((0, 0))[0]  # the dashed x = 1 line, in display coordinates
    assert box.x0 > line_x  # beside the line, not across it


def test_range_legend_covers_no_bar():
    figure, ax = plots.range_diagram(["fp32", "fp16", "bf16", "fp8_e4m3", "fp4"])
    bars = extents(figure, [p for p in ax.patches if p.get_gid()])
    legend = ax.get_legend().get_window_extent(drawn(figure))
    assert not any(legend.overlaps(bar) for bar in bars)


# ---- precision ------------------------------------------------------------------------------------------------


def test_precision_diagram_one_row_per_format_with_readable_eps():
    _, grid = plots.precision_diagram(["fp16", "bf16", "fp64"])
    assert grid.shape == (3, 2)
    tail, zoom = grid[0]
    relative, x = tail.lines[0].get_ydata(), tail.lines[0].get_xdata()
    assert relative.max() == 0.0 and x.min() == -24  # ulp(x)/x = 1 at the least subnormal
    assert relative[x >= -14].max() == -10 and relative[x >= -14].min() >= -11  # the tooth: [u, eps]
    assert x.max() - x.min() <= 16  # a window: 10 subnormal binades and 6 normal ones, not 40 binades of teeth
    assert [t.get_text() for t in zoom.get_yticklabels()] == ["$u = 2^{-11}$", "$\\varepsilon = 2^{-10}$"]
    fp64_tail = grid[2, 0].lines[0].get_xdata()
    assert fp64_tail.min() == -1074 and fp64_tail.max() < -1010  # no sample near fp64's max: nothing overflows


def test_precision_absolute_draws_ulp():
    _, grid = plots.precision_diagram(["fp16"], absolute=True)
    x, y = grid[0, 0].lines[0].get_xdata(), grid[0, 0].lines[0].get_ydata()
    assert np.all(y[x < -14] == -24) and y[x >= -14].min() == -24  # flat through the subnormals


# ---- number line and bits -------------------------------------------------------------------------------------


def test_number_line_draws_every_non_negative_value_on_three_labelled_lines():
    _, (whole, near_zero, logarithmic) = plots.number_line("fp8_e4m3")
    points = {line.get_gid(): len(line.get_xdata()) for line in whole.lines}
    assert points == {"normal": 120, "subnormal": 7}  # codes 0 to 0x7e: zero, 7 subnormals, 119 normals
    assert sum(len(line.get_xdata()) for line in logarithmic.lines) == 126  # zero has no place on a log axis
    assert sum(len(line.get_xdata()) for line in near_zero.lines) == 1 + 7 + 9  # 0, subnormals, [2^-6, 2^-5]
    assert 2.0**-9 in logarithmic.get_xticks() and 2.0**-9 in near_zero.get_xticks()
    assert all(axis.get_xlabel() for axis in (whole, near_zero, logarithmic))
    with pytest.raises(ValueError, match="at most 10 bits"):
        plots.number_line("fp16")


def test_number_line_several_formats_give_a_group_each():
    _, axes = plots.number_line(["e4m3", "fp4"])
    assert len(axes) == 6 and "fp4_e2m1" in axes[3].get_title()
    assert sum(len(line.get_xdata()) for line in axes[3].lines) == 8  # fp4: 0, 0.5, 1, 1.5, 2, 3, 4, 6


def test_bit_layout_shows_indices_fields_and_exponent_arithmetic():
    _, ax = plots.bit_layout(0.1, "fp16")
    assert [p.get_gid() for p in ax.patches if p.get_gid()] == ["sign"] + ["exponent"] * 5 + ["mantissa"] * 10
    texts = [t.get_text() for t in ax.texts]
    bits = [t for t in ax.texts if t.get_weight() == "bold"]
    assert "".join(t.get_text() for t in bits) == "0010111001100110"
    assert [int(t.get_text()) for t in ax.texts if t.get_fontsize() == 7] == list(range(15, -1, -1))
    assert any("biased 11 − 15 = −4" in t for t in texts)
    assert any("0.0999755859375" in t for t in texts)
    assert [t.get_color() for t in bits[1:6]] == ["white"] * 5  # light text on the dark exponent boxes
    assert {t.get_color() for t in bits[:1] + bits[6:]} == {"black"}  # dark text on the light boxes


def test_bit_layout_subnormal_and_several_formats():
    _, axes = plots.bit_layout(1e-6, ["fp16", "fp32", "fp4"])
    assert len(axes) == 3
    texts = [[t.get_text() for t in axis.texts] for axis in axes]
    assert any("biased 0 means subnormal: 1 − 15 = −14" in t for t in texts[0])
    assert any("biased 107 − 127 = −20" in t for t in texts[1])
    assert any("the code of zero" in t for t in texts[2])


# ---- rounding -------------------------------------------------------------------------------------------------


def test_rounding_error_one_panel_per_mode_down_and_toward_zero_differ_below_zero():
    _, grid = plots.rounding_error("fp16")
    assert grid.shape == (5, 2)
    modes = [row[0].get_title(loc="left").split(":")[0] for row in grid]
    assert modes == ["nearest_even", "toward_zero", "down", "up", "stochastic"]
    line = {
        mode: [row[c].lines[1].get_ydata() for c in (0, 1)] for mode, row in zip(modes, grid) if mode != "stochastic"
    }
    assert np.array_equal(line["down"][1], line["toward_zero"][1])  # x > 0: the same
    assert line["down"][0].max() <= 0 <= line["toward_zero"][0].min()  # x < 0: opposite signs
    assert np.abs(line["nearest_even"][1]).max() <= 0.5


def test_rounding_error_marks_ties_where_nearest_even_goes_even():
    _, grid = plots.rounding_error("fp16", modes=["nearest_even"])
    (ties,) = [line for line in grid[0, 1].lines if line.get_gid() == "ties"]
    t, error = ties.get_xdata(), ties.get_ydata()
    assert list(t) == [0.5, 1.5, 2.5, 3.5] and list(error) == [-0.5, 0.5, -0.5, 0.5]  # 1+k/2 ulp → the even code
    x = 1 + t * 2.0**-10
    assert np.all(fpsim.encode(x + error * 2.0**-10, "fp16") % 2 == 0)


def test_rounding_error_stochastic_shows_draws_and_mean():
    _, grid = plots.rounding_error(["fp16", "bf16"], modes=["stochastic"])
    assert grid.shape == (2, 2) and grid[1, 0].get_title(loc="left").startswith("bf16, stochastic")
    gids = [line.get_gid() for line in grid[0, 1].lines]
    assert gids.count("draws") == 4 and gids.count("mean") == 1
    assert abs(np.mean(grid[0, 1].lines[-1].get_ydata())) < 0.05  # unbiased


# ---- gradients ------------------------------------------------------------------------------------------------


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


def small_history(policy="fp32", loss=(2.0, 1.0, 0.5, 0.4), **fields):
    n = len(loss)
    config = scenario("underflow", policy=policy, steps=n).to_dict()
    defaults = {"scale": [1.0] * n, "skipped": [False] * n, "flushed": [0.0] * n}
    return History(config, {"name": policy}, loss=list(loss), **{**defaults, **fields})


def test_gradient_histogram_shares_x_and_names_its_source():
    g = np.random.default_rng(0).lognormal(-20, 3, 4096)
    history = small_history(gradient_sample=list(g))
    figure, axes = plots.gradient_histogram(history, ["fp16", "e4m3"], scale=1024)
    assert len(axes) == 4  # per format: as computed, and × 1024
    assert len({axis.get_xlim() for axis in axes}) == 1  # one x range, so the shift is visible
    bands = plots.gradient_bands(g, "fp16")
    assert axes[0].get_title(loc="left").startswith(f"fp16, gradients as computed: flushed {bands['flush']:.1%}")
    assert "of the last step's 4096 gradients" in axes[0].get_title(loc="left")
    assert "× 1024" in axes[1].get_title(loc="left") and axes[2].get_title(loc="left").startswith("fp8_e4m3")
    title = figure._suptitle.get_text()
    assert "fp32 run" in title and "underflow scenario" in title and "step 4" in title
    assert "× 1024" in title and "unscaled" not in title  # it said "unscaled" above a scaled panel
    assert "unscaled" in plots.gradient_histogram(history, "fp16")[0]._suptitle.get_text()
    assert axes[0].get_legend().get_texts()[0].get_text() == "rounds to zero (flushed)"


def _bands_drawn(axes) -> set[str]:
    return {p.get_gid().split(":")[1] for axis in axes for p in axis.patches if ":" in str(p.get_gid())}


@pytest.mark.parametrize(("fmt", "scale"), [("fp16", 2.0**16), ("fp16", None), ("fp32", None), ("bf16", 8.0)])
def test_gradient_histogram_legend_lists_exactly_the_bands_drawn(fmt, scale):
    g = np.random.default_rng(1).lognormal(-20, 3, 2048)
    _, axes = plots.gradient_histogram(g, fmt, scale=scale)
    legend = {t.get_text() for t in axes[0].get_legend().get_texts()}
    assert legend == {plots.gradients.BAND_LABELS[band] for band in _bands_drawn(axes)}
    for axis in axes:  # every band drawn lies in view
        left, right = axis.get_xlim()
        assert all(
            left <= p.get_x() < right and p.get_x() + p.get_width() <= right for p in axis.patches if p.get_gid()
        )


def test_gradient_histogram_of_fp16_shows_its_overflow_band():
    # fp16 spans 2^-25 (half its least subnormal) to 65504: the whole range fits, headroom for scaling included
    _, axes = plots.gradient_histogram(np.random.default_rng(1).lognormal(-20, 3, 2048), "fp16", scale=2.0**16)
    (overflow,) = [p for p in axes[1].patches if p.get_gid() == "fp16:overflow"]
    assert overflow.get_x() == pytest.approx(np.log2(65504.0)) and overflow.get_width() >= 2  # binades in view


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
        (lambda: plots.number_line("e4m3", ax=plots.range_diagram()[1]), "ax must hold 3 Axes"),
        (lambda: plots.training_figure(small_history(), ax=[plots.range_diagram()[1]]), "ax must hold 3 Axes"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---- training -------------------------------------------------------------------------------------------------


def test_a_run_that_turns_nan_is_marked_in_every_panel():
    nan_at_2 = small_history("fp16", loss=(2.0, np.nan, np.nan, np.nan))
    all_nan = small_history("bf16", loss=(np.nan,) * 4)
    _, panels = plots.training_figure([small_history(), nan_at_2, all_nan])
    for axis in panels:
        marks = {line.get_gid(): line.get_xdata()[0] for line in axis.lines if "non-finite" in str(line.get_gid())}
        assert marks == {"fp16:non-finite": 2, "bf16:non-finite": 1}
        labels = [t.get_text() for t in axis.get_legend().get_texts()]
        assert "fp16: loss NaN from step 2" in labels and "bf16: loss NaN from step 1" in labels
        assert any(label.startswith("bf16") for label in labels[:3])  # the all-NaN run still has its line
    (end,) = [line for line in panels[0].lines if line.get_gid() == "fp16:end"]
    assert (end.get_xdata()[0], end.get_ydata()[0]) == (1, 2.0)  # where fp16's line ends
    assert any(t.get_text() == "fp16: loss NaN from step 2" for t in panels[0].texts)


def test_training_legends_say_only_what_matters_and_stay_beside_the_data():
    skipping = small_history("amp", loss=(2.0, 1.5, 1.0, 0.5), scale=[8.0, 4.0, 4.0, 4.0], skipped=[True] + [False] * 3)
    figure, (loss, scale, flushed) = plots.training_figure([small_history(), small_history("fp16"), skipping])
    labels = [t.get_text() for t in scale.get_legend().get_texts()]
    assert "amp: 1 step skipped" in labels and not any("0 skipped" in text or "0 steps" in text for text in labels)
    two = small_history(
        "amp", loss=(2.0, 1.5, 1.0, 0.5), scale=[8.0, 4.0, 2.0, 2.0], skipped=[True, True, False, False]
    )
    assert "amp: 2 steps skipped" in [t.get_text() for t in plots.scale_trajectory(two)[1].get_legend().get_texts()]
    assert "fp16 (same as fp32)" in [t.get_text() for t in loss.get_legend().get_texts()]  # both visible
    assert {line.get_marker() for line in loss.lines if line.get_gid() in ("fp32", "fp16")} == {"o", "s"}
    renderer = drawn(figure)
    for axis in (loss, scale, flushed):
        legend = axis.get_legend().get_window_extent(renderer)
        assert legend.x0 >= axis.get_window_extent().x1  # right of the axes, over no line
    assert figure._suptitle.get_text().startswith("Scenario 'underflow': fp32, fp16, amp, 4 steps")
    assert all(axis.get_title(loc="left") for axis in (loss, scale, flushed))


@pytest.mark.parametrize("name", ["underflow", "overflow"])
def test_training_figure_title_writes_powers_of_two_as_superscripts(name):
    n = 4
    run = History(scenario(name, steps=n).to_dict(), {"name": "fp32"}, loss=[1.0] * n, scale=[1.0] * n,
                  skipped=[False] * n, flushed=[0.0] * n)  # fmt: skip
    title = plots.training_figure(run)[0]._suptitle.get_text()
    powers = re.findall(r"2\^\{?(\d+)", fpsim.train.SCENARIOS[name][0])
    assert powers and all(f"$2^{{{p}}}$" in title for p in powers)
    assert not re.search(r"(?<!\$)2\^\d", title)  # no plain 2^16 left


def test_training_figure_draws_into_given_axes():
    figure = Figure()
    given = figure.subplots(3, 1)
    drawn, panels = plots.training_figure([small_history()], ax=given)
    assert drawn is figure and list(panels) == list(given) and all(axis.lines for axis in given)


def with_policy(history: History) -> History:
    """The run with its policy's whole record (its scaler included), as training stores it."""
    history.policy = dataclasses.asdict(fpsim.policies.get_policy(history.policy["name"]))
    return history


def paired_runs(torch_nan_from: int = 2) -> tuple[list[History], list[History]]:
    """fp32, fp16 (loss NaN from step 2 in the simulator) and amp (one skipped step), then the same on torch."""
    amp = {"loss": (2.0, 1.5, 1.0, 0.5), "scale": [8.0, 4.0, 4.0, 4.0], "skipped": [True, False, False, False]}
    torch_fp16 = tuple(2.0 if step < torch_nan_from else math.nan for step in range(1, 5))
    runs = []
    for fp16_loss in ((2.0, math.nan, math.nan, math.nan), torch_fp16):
        runs.append([small_history(), small_history("fp16", loss=fp16_loss), small_history("amp", **amp)])
    for history in runs[1]:
        history.backend, history.environment = "torch", {"device": "cpu"}
    return tuple([with_policy(h) for h in side] for side in runs)


def test_simulator_vs_hardware_gives_each_policy_a_row_with_torch_dashed_on_top_of_the_simulator():
    simulated, hardware = paired_runs()
    hardware[2].loss = [2.0, 1.5, 1.0, 0.45]
    figure, grid = plots.simulator_vs_hardware(simulated, hardware)
    assert grid.shape == (3, 2)  # loss and loss scale (amp has a scaler); no run flushed a gradient: no third column
    for row, (sim, hw) in zip(grid, zip(simulated, hardware)):  # each row pairs one policy's two runs
        lines = {line.get_gid(): line for line in row[0].lines if line.get_gid() in ("simulator", "hardware")}
        assert np.array_equal(lines["simulator"].get_ydata(), sim.loss, equal_nan=True)
        assert np.array_equal(lines["hardware"].get_ydata(), hw.loss, equal_nan=True)
        for panel in (p for p in row if p.axison):  # solid and wide under dashed, thin, marked, in another colour
            sim_line, hw_line = (
                next(line for line in panel.lines if line.get_gid() == g) for g in ("simulator", "hardware")
            )
            assert (sim_line.get_linestyle(), hw_line.get_linestyle()) == ("-", "--")
            assert sim_line.get_linewidth() > 2 * hw_line.get_linewidth() and hw_line.get_marker() == "o"
            assert hw_line.get_zorder() > sim_line.get_zorder() and sim_line.get_color() != hw_line.get_color()
    assert grid[2, 0].get_title(loc="left") == "amp: skipped steps 1 | 1, final loss 0.5 | 0.45"
    assert not grid[0, 1].axison and "fp32: no loss scaling" in grid[0, 1].texts[0].get_text()
    assert [t.get_text().strip() for t in grid[1, 0].texts] == ["loss NaN from step 2"]  # both sides: one mark
    assert [line.get_gid() for line in grid[1, 0].lines].count("fp16:non-finite") == 1
    assert len({p.get_ylim() for p in grid[:, 0]}) == 1  # one loss axis: rows compare at a glance
    assert all(p.get_legend() is None for p in grid.flat) and len(figure.legends) == 1  # one shared legend
    labels = [t.get_text() for t in figure.legends[0].get_texts()]
    assert labels[:2] == ["fpsim simulator", "torch on cpu"]
    renderer = drawn(figure)
    title = figure._suptitle
    assert "$2^{16}$" in title.get_text() and "no gradient element was flushed" in title.get_text().lower()
    box = title.get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= figure.bbox.x1  # wrapped to the figure: not clipped on either side
    with pytest.raises(ValueError, match="must pair up"):
        plots.simulator_vs_hardware([small_history()], [small_history("amp")])


def test_simulator_vs_hardware_marks_each_sides_divergence_and_draws_flushed_shares_from_zero():
    simulated, hardware = paired_runs(torch_nan_from=3)
    simulated[1].flushed = [0.0, 0.25, 0.5, 0.5]
    _, grid = plots.simulator_vs_hardware(simulated, hardware)
    assert grid.shape == (3, 3)
    assert [t.get_text().strip() for t in grid[1, 0].texts] == [
        "loss NaN from step 2 (simulator)",
        "loss NaN from step 3 (torch)",
    ]
    low, high = grid[1, 2].get_ylim()
    assert low == 0 and high >= 50 and all(p.get_ylim() == (low, high) for p in grid[:, 2])  # from 0, shared
    assert grid[0, 2].texts[0].get_text() == "none flushed" and not grid[1, 2].texts
    assert grid[1, 0].get_title(loc="left").endswith("mean flushed 31% | 0%")


def test_styles_are_stable_per_format_and_policy():
    assert style("fp16") == style("half") != style("bf16")
    looks = [tuple(map(str, style(f).values())) for f in fpsim.PRESETS]
    assert len(set(looks)) == len(looks)  # every preset has a look of its own
    assert policy_style("amp") == policy_style("amp") != policy_style("fp16")


# ---- accumulation error against K ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tensorcore_curves():
    return plots.dot_error_curves(plots.accumulation.KS)


def test_dot_error_curves_measure_every_accumulation_on_the_same_data(tensorcore_curves):
    acc = plots.accumulation
    assert list(tensorcore_curves) == [acc.EXACT, acc.FP32, "v100_fp16: 4 products, 23 bits",
                                       "a100_fp16: 8 products, 24 bits", "h100_fp16 = b200_fp16: 16 products, 25 bits",
                                       "h100_fp8_e4m3: 32 products, 13 bits", acc.PROMOTED]  # fmt: skip
    exact, fp32 = tensorcore_curves[acc.EXACT], tensorcore_curves[acc.FP32]
    assert np.all((exact > 0) & (exact <= 2.0**-24))  # one rounding to nearest: within half an ulp of fp32
    assert np.all(fp32 >= exact) and fp32[-1] > 50 * exact[-1]  # 4095 roundings grow; one does not
    fp8, promoted = tensorcore_curves[acc.FP8], tensorcore_curves[acc.PROMOTED]
    ks = np.array(acc.KS)
    assert np.array_equal(fp8[ks <= 128], promoted[ks <= 128])  # nothing to promote before 128 terms
    assert 0.01 < fp8[-1] < 0.05 and fp8[-1] > 10 * promoted[-1]  # DeepSeek's ~2% at K = 4096, and the repair


def test_dot_error_curves_agree_with_an_exact_rational_sum():
    """The exact curve against Fractions: the same seeded data, summed exactly and rounded once by the codec."""
    from fractions import Fraction

    acc = plots.accumulation
    rng = np.random.default_rng(5)
    a, b = acc._positive_e4m3(rng, (3, 16)), acc._positive_e4m3(rng, (16,))
    sums = [sum(Fraction(x) * Fraction(y) for x, y in zip(row, b)) for row in a]
    rounded = fpsim.round(np.array([float(s) for s in sums]), "fp32")  # float(s) exact: k·2^-18 below 2^53
    expected = np.mean([abs(Fraction(r) - s) / s for r, s in zip(rounded, sums)])
    curves = plots.dot_error_curves([16], rows=3, seed=5)
    assert curves[acc.EXACT][0] == pytest.approx(float(expected), rel=1e-12)


def test_dot_error_curves_refuse_bad_arguments():
    with pytest.raises(ValueError, match="ks must be lengths between 1 and 65536"):
        plots.dot_error_curves([0])
    with pytest.raises(ValueError, match="inputs: no matrix unit takes 'fp32'"):
        plots.dot_error_curves([16], inputs="fp32")


def test_accumulation_error_draws_the_curves_it_is_given(tensorcore_curves):
    ks = plots.accumulation.KS
    figure, ax = plots.accumulation_error(ks, tensorcore_curves)
    lines = {line.get_gid(): line for line in ax.lines if line.get_gid()}
    assert set(lines) == set(tensorcore_curves)
    for label, values in tensorcore_curves.items():
        assert np.array_equal(lines[label].get_xdata(), ks) and np.array_equal(lines[label].get_ydata(), values)
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(k) for k in ks]
    percents = [t.get_text() for t in ax.texts if t.get_text().endswith("%")]
    assert percents == [f"{100 * tensorcore_curves[label][-1]:.2g}%" for label in ("h100_fp8_e4m3: 32 products, "
                        "13 bits", plots.accumulation.PROMOTED)]  # fmt: skip
    (legend_box, axes_box) = extents(figure, [ax.get_legend(), ax])
    assert legend_box.x0 >= axes_box.x1  # beside the axes: no curve hidden under it
    with pytest.raises(ValueError, match="one error per K"):
        plots.accumulation_error(ks[:3], tensorcore_curves)


def test_accumulation_error_leaves_exact_zeros_out_of_the_log_axis():
    _, ax = plots.accumulation_error([16, 32], {"a": [0.0, 1e-7]})
    (line,) = [line for line in ax.lines if line.get_gid() == "a"]
    assert np.isnan(line.get_ydata()[0]) and line.get_ydata()[1] == 1e-7


# ---- block formats -------------------------------------------------------------------------------------------
def spec_scale(row, emax):
    """OCP MX v1.0: X = 2^(floor(log2 amax) − emax), floor(log2) read exactly from frexp."""
    return 2.0 ** (np.frexp(np.abs(row).max())[1] - 1 - emax)


def test_block_diagram_marks_what_the_spec_makes_of_each_element():
    """mxfp4 (e2m1, emax 2, max 6, least subnormal 0.5): |x| ≤ X/4 flushes (a tie goes to the even 0), |x| ≥ 7X
    saturates (rounds past 6 to 8: the tie at 7 goes to the even 8). The outlier row's X is 2^3, so every neighbour at
    or below 2 flushes."""
    rows = plots.blocks.outlier_example()
    figure, grid = plots.block_diagram(rows, "mxfp4")
    assert grid.shape == (2, 1)
    for axis, row in zip(grid[:, 0], rows):
        scale = spec_scale(row, 2)
        flushed, saturated = np.abs(row) <= scale / 4, np.abs(row) >= 7 * scale
        title = axis.get_title(loc="left")
        assert f"{flushed.sum()} of 32 flushed to 0, {saturated.sum()} saturated at 6·X" in title
        assert f"= $2^{{{int(np.log2(scale))}}}$;" in title
        spans = sorted((p.get_y(), p.get_y() + p.get_height()) for p in axis.patches)
        assert [high for _, high in spans[:3]] == [scale / 4, scale, 6 * scale]  # flush | subnormal | normal | above
    assert "31 of 32 flushed" in grid[1, 0].get_title(loc="left")  # the outlier flushes all its neighbours
    assert not overlaps(extents(figure, [grid[0, 0].get_legend(), grid[0, 0], grid[1, 0]]))  # legend beside the data


def test_block_diagram_of_nvfp4_shares_one_tensor_scale_between_the_rows():
    """NVFP4's recipe for one tensor of both rows: s_t = fp32(amax / (448·6)), S_b = RNE_e4m3(amax_b / (6·s_t))."""
    rows = plots.blocks.outlier_example(16)
    tensor_scale = float(np.float32(48.0 / 2688))  # the outlier 48 is the tensor's amax
    figure, grid = plots.block_diagram(rows, "nvfp4")
    for axis, row in zip(grid[:, 0], rows):
        block_scale = min(float(fpsim.round(np.abs(row).max() / (6 * tensor_scale), "fp8_e4m3")), 448.0)
        title = axis.get_title(loc="left")
        assert f"X = e4m3 block scale {block_scale:g} × tensor scale {tensor_scale:.4g}" in title, title
    assert "block scale 448 ×" not in grid[0, 0].get_title(loc="left")  # the small block's scale is its own
    assert f"one tensor scale s_t = {tensor_scale:.4g} for both rows" in figure._suptitle.get_text()
    assert "15 of 16 flushed to 0" in grid[1, 0].get_title(loc="left")


@pytest.mark.parametrize("name", ["mxfp4", "mxfp8_e4m3"])
def test_block_diagram_title_says_what_the_outlier_did(name):
    """The spec's rule gives each row's X; an element flushes when |x| ≤ X·(least subnormal)/2 (tie to the even 0)."""
    fmt = fpsim.get_block_format(name)
    rows = plots.blocks.outlier_example()
    least = fmt.element.smallest_subnormal
    flushed = [int(np.sum(np.abs(row) <= spec_scale(row, fmt.element.emax) * least / 2)) for row in rows]
    figure = plots.block_diagram(rows, name)[0]
    title = figure._suptitle.get_text()
    (box,) = extents(figure, [figure._suptitle])
    assert box.x0 >= 0 and box.x1 <= figure.bbox.width  # nothing clipped
    assert f"here {flushed[1]} of 32 flush to zero" in title
    if flushed[1] > flushed[0]:  # mxfp4: the outlier's X flushes its neighbours
        assert f"fall below the smallest element value times X:\nhere {flushed[1]} of 32" in title
        assert f"against {flushed[0]} in the block without it" in title
    else:  # mxfp8_e4m3: e4m3's wide range keeps them (the old title claimed a flush regardless)
        assert flushed == [0, 0] and "still holds the small neighbours" in title and "fall below" not in title


@pytest.mark.parametrize(
    ("blocks", "fmt", "message"),
    [(np.ones(33), "mxfp4", "at most 32 values for mxfp4"), (np.ones(17), "nvfp4", "at most 16 values"),
     ([1.0, np.nan], "mxfp4", "finite values"), (np.ones(4), "mxfp9", "mxfp9")],
)  # fmt: skip
def test_block_diagram_bad_input(blocks, fmt, message):
    with pytest.raises(ValueError, match=message):
        plots.block_diagram(blocks, fmt)


def test_block_error_measures_each_format_as_its_definition_says():
    """MX from the spec's rule; per-tensor fp8: the largest power of two 2^k with amax·2^k ≤ 448, found by search."""
    sample = plots.blocks.hidden_gradient("baseline", steps=2)
    nonzero = sample != 0
    scales = np.stack([np.repeat([spec_scale(part, 2) for part in np.split(row, 2)], 32) for row in sample])
    mx = fpsim.round(sample / scales, "fp4_e2m1", overflow="saturate") * scales
    k, amax = 0, np.abs(sample).max()
    while amax * 2.0 ** (k + 1) <= 448:
        k += 1
    while amax * 2.0**k > 448:
        k -= 1
    fp8 = fpsim.round(sample * 2.0**k, "fp8_e4m3") / 2.0**k
    errors = plots.blocks.element_errors(sample, ["mxfp4", "fp8_e4m3"])
    for name, reference in (("mxfp4", mx), ("fp8_e4m3", fp8)):
        expected = np.abs(reference - sample)[nonzero] / np.abs(sample[nonzero])
        assert np.array_equal(errors[name], expected)
    figure, grid = plots.block_error(sample, ["mxfp4", "fp8_e4m3"])
    for axis, reference in zip(grid[0], (mx, fp8)):  # flushed: nonzero in, zero out; the median, three digits
        flushed = 100 * np.mean(reference[nonzero] == 0)
        median = 100 * np.median(np.abs(reference - sample)[nonzero] / np.abs(sample[nonzero]))
        assert f"median error {median:.3g}%, flushed to 0: {flushed:.3g}%" in axis.get_title()
    assert grid.shape == (1, 3)
    assert [line.get_label() for line in grid[0, 2].get_lines()] == ["mxfp4", "fp8_e4m3"]
    assert not overlaps(extents(figure, [a.title for a in grid[0]]))


def test_block_error_takes_block_formats_as_get_block_format_names_them():
    """Aliases and any case name the same block format as its preset name does (per-tensor fp8 does not)."""
    sample = plots.blocks.hidden_gradient("baseline", steps=2)
    errors = plots.blocks.element_errors(sample, ["mxfp4", "MXFP4", "mxfp4_e2m1", "fp4_e2m1"])
    assert np.array_equal(errors["MXFP4"], errors["mxfp4"]) and np.array_equal(errors["mxfp4_e2m1"], errors["mxfp4"])
    assert not np.array_equal(errors["fp4_e2m1"], errors["mxfp4"])


@pytest.mark.parametrize("formats", [["fp4_e2m1"], ["mxfp4", "nvfp4"]])
def test_block_error_title_fits_the_figure_with_few_formats(formats):
    sample = plots.blocks.hidden_gradient("baseline", steps=2)
    figure, _ = plots.block_error(sample, formats, source=plots.blocks.hidden_source("underflow", 150))
    (box,) = extents(figure, [figure._suptitle])
    assert box.x0 >= 0 and box.x1 <= figure.bbox.width


@pytest.mark.parametrize(
    ("sample", "formats", "message"),
    [(np.zeros(8), ["mxfp4"], "no nonzero value"), ([1.0, np.inf], ["mxfp4"], "finite values"),
     (np.ones(8), ["fp9"], "'fp9' is neither a block format"), (np.ones(8), [], "at least one format")],
)  # fmt: skip
def test_block_error_bad_input(sample, formats, message):
    with pytest.raises(ValueError, match=message):
        plots.block_error(sample, formats)


# ---- the command line -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["range"], ["precision", "--absolute"], ["numberline", "-f", "e4m3,fp4"], ["bits"], ["bits", "0.1"],
     ["bits", "--value", "-2.5", "-f", "fp16,bf16"], ["rounding", "-f", "fp16,bf16"], ["tensorcore"], ["blocks"],
     ["blocks", "-f", "nvfp4"], ["block-error", "--steps", "3"],
     ["block-error", "-f", "mxfp8_e4m3,fp8_e4m3", "-s", "baseline", "--steps", "2"]],
    ids=lambda argv: " ".join(argv),
)  # fmt: skip
def test_cli_writes_each_kind(tmp_path, capsys, argv):
    out = tmp_path / "figure.svg"
    assert main(["plot", *argv, "-o", str(out)]) == 0
    assert out.stat().st_size > 1000 and out.read_text().startswith("<?xml")


def test_cli_bits_value_is_positional_as_in_explain(tmp_path, capsys):
    for argv in (["0.1"], ["--value", "0.1"]):
        out = tmp_path / "bits.svg"
        assert main(["plot", "bits", *argv, "-o", str(out)]) == 0
        assert "0.1 stored in fp16" in out.read_text()


def write_report(path: Path, **comparisons: tuple[list[History], list[History]]) -> Path:
    """A report.json as compare ("comparison") or demo (one entry per scenario) writes it."""
    content = {
        key: {
            "scenario": key,
            "simulator": list(map(dataclasses.asdict, sim)),
            "torch": list(map(dataclasses.asdict, hw)),
        }
        for key, (sim, hw) in comparisons.items()
    }
    path.write_text(json.dumps(content))
    return path


def test_cli_plot_compare_draws_a_compare_or_demo_report(tmp_path, capsys):
    compared = write_report(tmp_path / "compare.json", comparison=paired_runs())
    demo = write_report(tmp_path / "demo.json", underflow=paired_runs(), overflow=paired_runs(3))
    for argv in ([str(compared)], [str(demo), "--scenario", "overflow"]):
        out = tmp_path / "compare.svg"
        assert main(["plot", "compare", "--from", *argv, "-o", str(out)]) == 0
        assert "fp16: skipped steps 0 | 0" in out.read_text()  # a row title of the figure


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "plot compare needs --from DIR/report.json"),
        (["--from", "DIR"], "is a folder or another non-regular file"),
        (["--from", "NOTJSON"], "it is not JSON"),
        (["--from", "NOCOMPARISON"], "it holds no comparison"),
        (["--from", "DEMO"], "holds the underflow and overflow comparisons: pick one with --scenario"),
        (["--from", "DEMO", "--scenario", "baseline"], "holds no baseline comparison, only underflow, overflow"),
        (["--from", "SHORT"], "run 2: 'scale' must list one value per step"),
        (["--from", "DEMO", "--steps", "3"], "--steps does not apply to `plot compare`"),
    ],
)
def test_cli_plot_compare_refuses_a_bad_report_naming_the_file(tmp_path, capsys, argv, message):
    sim, hw = paired_runs()
    hw[1].scale = hw[1].scale[:2]
    files = {
        "DIR": tmp_path,
        "NOTJSON": tmp_path / "report.md",
        "NOCOMPARISON": tmp_path / "none.json",
        "DEMO": write_report(tmp_path / "demo.json", underflow=paired_runs(), overflow=paired_runs()),
        "SHORT": write_report(tmp_path / "short.json", comparison=(sim, hw)),
    }
    files["NOTJSON"].write_text("# report")
    files["NOCOMPARISON"].write_text('{"runs": []}')
    argv = [str(files[a]) if a in files else a for a in argv]
    assert main(["plot", "compare", *argv, "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "out.png").exists()
    if "--from" in argv and message.startswith(("it", "holds", "run", "is")):
        assert f"--from {argv[argv.index('--from') + 1]!r}" in err  # the file is named


def test_cli_histogram_and_training_from_a_results_file(tmp_path, capsys):
    results = tmp_path / "runs.json"
    assert main(["train", "-p", "fp32,amp", "--steps", "10", "-q", "-o", str(results)]) == 0
    for kind in ("histogram", "training"):
        out = tmp_path / f"{kind}.png"
        extra = ["--scale", "1024"] if kind == "histogram" else []
        assert main(["plot", kind, "--from", str(results), *extra, "-o", str(out)]) == 0
        assert out.read_bytes()[:4] == b"\x89PNG"


def test_cli_trains_with_progress_when_there_is_no_file(tmp_path, capsys):
    out = tmp_path / "h.png"
    assert main(["plot", "histogram", "--scenario", "overflow", "--steps", "3", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "[fp32] step 3/3" in err and out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plot", "pie"], "invalid choice: 'pie'"),
        (["plot", "range", "-o", "/nonexistent/folder/x.png"], "does not exist"),
        (["plot", "range", "-o", "x.gif"], "-o must end in .png, .svg, .pdf"),
        (["plot", "range", "-o", ""], "-o must name a file"),
        (["plot", "histogram", "--from", ""], "--from must name a results file"),
        (["plot", "histogram", "--from", "/nonexistent.json"], "no such file"),
        (["plot", "histogram", "--from", "EMPTY"], "no 'runs' list"),
        (["plot", "range", "0.1"], "VALUE (or --value) does not apply to `plot range`"),
        (["plot", "rounding", "--value", "0.1"], "VALUE (or --value) does not apply"),
        (["plot", "bits", "0.1", "--value", "0.2"], "give the value once"),
        (["plot", "range", "--scale", "2"], "--scale does not apply"),
        (["plot", "bits", "--absolute"], "--absolute does not apply"),
        (["plot", "training", "-f", "fp16"], "--formats does not apply"),
        (["plot", "range", "--steps", "5"], "--steps does not apply"),
        (["plot", "histogram", "--from", "EMPTY", "--steps", "5"], "with --from the runs come from the file"),
        (["plot", "training", "--steps", "0"], "--steps must be a positive int"),
        (["plot", "training", "--steps", "99999999999999999999"], "--steps 99999999999999999999 is too many"),
        (["plot", "histogram", "--scale", "0"], "--scale must be a finite number > 0"),  # one line: before training
        (["plot", "histogram", "--scale", "nan"], "--scale must be a finite number > 0"),
        (["plot", "bits", "nan", "-f", "fp4"], "VALUE contains NaN, but fp4_e2m1 has no NaN encoding; plot bits"),
        (["plot", "numberline", "-f", "fp16"], "at most 10 bits"),
        (["plot", "tensorcore", "-f", "fp16"], "--formats does not apply to `plot tensorcore`"),
        (["plot", "tensorcore", "16"], "VALUE (or --value) does not apply to `plot tensorcore`"),
        (["plot", "blocks", "-f", "mxfp4,nvfp4"], "plot blocks draws one block format; got --formats mxfp4,nvfp4"),
        (["plot", "blocks", "-f", "fp8_e4m3"], "'fp8_e4m3' is not one: give one of mxfp8_e4m3"),
        (
            ["plot", "blocks", "-f", "fp16"],
            "plot blocks draws a block format; 'fp16' is not one: give one of mxfp8_e4m3",
        ),
        (["plot", "block-error", "-f", "mxfp4,e8m0"], "--formats: e8m0 has no sign, so it cannot hold a gradient"),
        (["plot", "blocks", "--steps", "3"], "--steps does not apply to `plot blocks`"),
        (["plot", "block-error", "--from", "EMPTY"], "--from does not apply to `plot block-error`"),
        (["plot", "block-error", "-f", "mxfp4,fp9"], "--formats: 'fp9' is neither a block format (mxfp8_e4m3"),
        (["plot", "block-error", "--steps", "0"], "--steps must be a positive int"),
    ],
)
def test_cli_bad_input(capsys, tmp_path, argv, message):
    empty = tmp_path / "empty.json"
    empty.write_text('{"runs": []}')
    assert main([str(empty) if arg == "EMPTY" else arg for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert "on_nan" not in err and "--on-nan" not in err and "='" not in err  # no option plot lacks, no Python


@pytest.mark.parametrize(("failure", "code"), [(OSError(errno.ENOSPC, "No space left on device"), 2),
                                               (KeyboardInterrupt(), 130)])  # fmt: skip
def test_cli_failed_write_leaves_the_existing_file(tmp_path, capsys, monkeypatch, failure, code):
    keep = tmp_path / "keep.png"
    keep.write_bytes(b"the old picture")

    def half_then_fail(self, file, **options):
        file.write(b"\x89PNG half")
        raise failure

    monkeypatch.setattr(Figure, "savefig", half_then_fail)
    assert main(["plot", "range", "-o", str(keep)]) == code
    assert keep.read_bytes() == b"the old picture" and [p.name for p in tmp_path.iterdir()] == ["keep.png"]
    assert capsys.readouterr().err.count("\n") == 1


def test_cli_help_lists_kinds_and_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    text = capsys.readouterr().out
    for kind in ("range", "precision", "numberline", "bits", "rounding", "histogram", "training", "blocks",
                 "block-error"):  # fmt: skip
        assert re.search(rf"^  {kind} +\S", text, re.MULTILINE)  # one line each
    assert "default: KIND.png" in text and "default: underflow" in text and "default: 0.1" in text


def test_cli_help_wraps_to_the_terminal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    with pytest.raises(SystemExit):
        main(["plot", "--help"])
    text = capsys.readouterr().out
    body = text.split("\n\n", 1)[1]  # after the usage block
    assert "Draw one figure" in body
    assert [line for line in body.splitlines() if len(line) > 60 and "{" not in line] == []  # {kinds}: one token


def test_gallery_help_writes_nothing(tmp_path, capsys, monkeypatch):
    from fpsim.plots import gallery

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        gallery.main(["--help"])
    assert exit_.value.code == 0 and "FOLDER" in capsys.readouterr().out.upper() and list(tmp_path.iterdir()) == []


def test_gallery_images_are_small_and_present():
    gallery = Path(__file__).parent.parent / "docs" / "gallery"
    images = sorted(gallery.glob("*.png"))
    assert len(images) >= 8 and all(image.stat().st_size < 200_000 for image in images)


def test_figures_draw_without_warnings():
    for figure in (plots.precision_diagram(["fp64"])[0], plots.range_diagram(["fp64", "e2m0"])[0]):
        figure.savefig(io.BytesIO(), format="png")  # the suite turns any warning into an error
