"""t2v_nb.viz: every function returns a drawable Figure (or HTML), labelled, from torch or numpy input."""

from __future__ import annotations

import ast
import io
import pathlib

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from t2v_nb import viz

from conftest import SMALL, tiny_pipe

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def run():
    """A finished tiny run (3 steps, 3 frames, 8x8 latents, 24-wide text features)."""
    return tiny_pipe().start("a red circle", **SMALL).finish(progress=False)


def both(a: np.ndarray) -> list:
    """The same values as a numpy array and as a torch tensor."""
    return [a, torch.from_numpy(np.ascontiguousarray(a))]


def image_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images]


def check(fig: Figure, n_axes: int | None = None) -> Figure:
    """A Figure with a title and axis labels that renders to PNG."""
    assert isinstance(fig, Figure)
    titles = [fig.get_suptitle()] + [ax.get_title() for ax in fig.axes]
    assert any(t.strip() for t in titles), "no title"
    xlabels = [fig.get_supxlabel()] + [ax.get_xlabel() for ax in fig.axes]
    ylabels = [fig.get_supylabel()] + [ax.get_ylabel() for ax in fig.axes]
    assert any(x.strip() for x in xlabels) and any(y.strip() for y in ylabels), "no axis labels"
    if n_axes is not None:
        assert len(image_axes(fig) or fig.axes) == n_axes
    fig.savefig(io.BytesIO(), format="png", dpi=40)
    return fig


def imported(path: pathlib.Path) -> str:
    """The module names a Python file imports, as one string."""
    tree = ast.parse(path.read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names]
    return " ".join(names + [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)])


def test_figures_show_themselves_as_png_without_pyplot():
    fig = viz.temporal_attention(np.eye(2))
    assert fig._repr_png_().startswith(b"\x89PNG")  # what Jupyter calls when no inline backend is loaded


def test_viz_draws_with_figure_not_pyplot_and_core_has_no_matplotlib():
    root = pathlib.Path(viz.__file__).parent
    for view in ("viz.py", "page.py"):  # the modules that draw: matplotlib's Figure and colormaps, never pyplot
        assert "pyplot" not in imported(root / view), view
    for path in root.glob("*.py"):
        if path.name not in ("viz.py", "widgets.py", "page.py"):
            assert "matplotlib" not in imported(path), path.name


# ------------------------------------------------------------------------------------- text


def test_token_tables(run):
    tokens = run.text.tokens
    page = viz.token_table_html(tokens, run.text.input_ids)  # [1, 77] ids: the first len(tokens) are used
    assert page.startswith("<table") and page.count("<tr") == len(tokens) + 1
    assert "&lt;|startoftext|&gt;" in page and "start of text" in page and "end of text" in page
    assert "␣" in page and "</w>" not in page.replace("<code>&lt;/w&gt;</code>", "")
    assert str(int(run.text.input_ids[0, 1])) in page
    assert "<th" in viz.token_table_html(["a</w>"]) and "id</th>" not in viz.token_table_html(["a</w>"])
    fig = viz.token_table(tokens, run.text.input_ids.numpy())
    assert isinstance(fig, Figure) and fig.axes[0].get_title()
    fig.savefig(io.BytesIO(), format="png", dpi=40)
    with pytest.raises(ValueError, match="2 ids for 3 tokens"):
        viz.token_table_html(["a", "b", "c"], [1, 2])


def test_embedding_norms(run):
    emb, tokens = run.text.embeddings, run.text.tokens
    for e in (emb, emb[0].numpy()):
        fig = check(viz.embedding_norms(e, tokens), n_axes=1)
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, np.linalg.norm(emb[0].numpy(), axis=-1), rtol=1e-5)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "<start>" and labels[1] == "a␣" and labels[-1] == "…" and len(labels) == len(tokens) + 4
    with pytest.raises(ValueError, match=r"\(2, 77, 24\)"):
        viz.embedding_norms(torch.zeros(2, 77, 24), tokens)
    with pytest.raises(ValueError, match="80 tokens"):
        viz.embedding_norms(emb, ["x"] * 80)


def test_token_similarity_diagonal_is_one(run):
    n = len(run.text.tokens)
    for e in (run.text.embeddings, run.text.embeddings.numpy()):
        fig = check(viz.token_similarity(e, run.text.tokens))
    sim = image_axes(fig)[0].images[0].get_array()
    assert sim.shape == (n, n)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    np.testing.assert_allclose(sim, sim.T, atol=1e-6)
    fig = check(viz.token_similarity(RNG.normal(size=(77, 5)), ["<|startoftext|>"]))  # one token
    assert image_axes(fig)[0].images[0].get_array().shape == (1, 1)
    with pytest.raises(ValueError, match=r"\(77,\)"):
        viz.token_similarity(np.zeros(77), ["a"])


def test_prompt_similarity(run):
    embs = [run.text.embeddings, run.text.negative_embeddings.numpy(), torch.randn(1, 77, 24)]
    prompts = ["a red circle", "", "noise " * 20]
    fig = check(viz.prompt_similarity(embs, prompts))
    sim = image_axes(fig)[0].images[0].get_array()
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    assert "mean over tokens" in fig.axes[0].get_title()
    lengths = [len(run.text.tokens), 2, 77]
    fig = check(viz.prompt_similarity(embs, prompts, pool="eos", lengths=lengths))
    e = [np.asarray(x).reshape(77, 24)[n - 1] for x, n in zip(embs, lengths)]
    expected = e[0] @ e[1] / np.linalg.norm(e[0]) / np.linalg.norm(e[1])
    assert image_axes(fig)[0].images[0].get_array()[0, 1] == pytest.approx(expected, abs=1e-5)
    check(viz.prompt_similarity([np.ones(24)], ["pooled already"]))
    with pytest.raises(ValueError, match="2 embeddings and 1 prompts"):
        viz.prompt_similarity(embs[:2], prompts[:1])
    with pytest.raises(ValueError, match="lengths"):
        viz.prompt_similarity(embs, prompts, pool="eos")
    with pytest.raises(ValueError, match=r"\(3, 77, 24\)"):
        viz.prompt_similarity([torch.zeros(3, 77, 24)], ["batch"])


# ------------------------------------------------------------------------------------ noise


def test_noise_schedule(run):
    fig = check(viz.noise_schedule(run.scheduler, run.timesteps))
    top, bottom = fig.axes
    assert bottom.get_yscale() == "log" and "signal-to-noise" in bottom.get_ylabel()
    assert "timestep t" in bottom.get_xlabel()
    ac = run.scheduler.alphas_cumprod.numpy()
    np.testing.assert_allclose(top.lines[0].get_ydata(), np.sqrt(ac), rtol=1e-6)
    dots = bottom.lines[-1].get_xdata()
    np.testing.assert_array_equal(dots, run.timesteps.numpy())
    check(viz.noise_schedule(np.linspace(0.999, 0.01, 50), timesteps=[40]))  # a bare array, one timestep
    with pytest.raises(TypeError, match="alphas_cumprod"):
        viz.noise_schedule(object())
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        viz.noise_schedule(np.ones((2, 5)))
    page = viz.schedule_table_html(run.scheduler, run.timesteps)
    assert page.count("<tr") == len(run.timesteps) + 1 and str(int(run.timesteps[0])) in page


def test_latent_stats(run):
    fig = check(viz.latent_stats(run.trace), n_axes=2)
    assert [ax.get_title() for ax in fig.axes] == ["step.latents", "step.pred_x0"]
    assert fig.axes[-1].get_xlabel() == "denoising step"
    mean_line = fig.axes[1].lines[0].get_ydata()
    np.testing.assert_allclose(mean_line, run.trace["step.pred_x0"].reshape(3, -1).double().mean(1).numpy(), rtol=1e-6)
    one = {"step.noise_pred": RNG.normal(size=(1, 1, 4, 1, 8, 8))}  # S = 1, F = 1, numpy, a dict
    check(viz.latent_stats(one, names="step.noise_pred"), n_axes=1)
    with pytest.raises(ValueError, match="step.next_latent'.*not in the trace"):
        viz.latent_stats(run.trace, names=["step.next_latent"])
    with pytest.raises(ValueError, match=r"\(5,\)"):
        viz.latent_stats({"step.x": np.zeros(5)}, names=["step.x"])


def test_trajectory_pca_first_point_is_the_projection(run):
    fig = check(viz.trajectory_pca(run.trace))
    ax = fig.axes[0]
    assert [l.get_label() for l in ax.lines] == ["step.latents", "step.pred_x0"]
    x = np.concatenate([run.trace[n].reshape(3, -1).numpy() for n in ("step.latents", "step.pred_x0")])
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred[0] @ vt[:2].T
    got = ax.lines[0].get_xydata()[0]
    np.testing.assert_allclose(np.abs(got), np.abs(expected), rtol=1e-3, atol=1e-3)  # a PC's sign is arbitrary
    assert "variance" in ax.get_xlabel()
    for a in both(RNG.normal(size=(5, 4, 2, 8, 8)).astype(np.float32)):
        assert len(check(viz.trajectory_pca(a)).axes[0].lines) == 1
    check(viz.trajectory_pca(np.ones((1, 10))))  # S = 1: one point
    with pytest.warns(UserWarning, match="step.noise_pred_text"):
        viz.trajectory_pca({"step.latents": np.ones((2, 3))}, also=["step.noise_pred_text"])
    with pytest.raises(ValueError, match=r"\(7,\)"):
        viz.trajectory_pca(np.zeros(7))


def test_guidance_parts(run):
    u, c, g = (run.trace[n][1] for n in ("step.noise_pred_uncond", "step.noise_pred_text", "step.noise_pred"))
    fig = check(viz.guidance_parts(u, c, g, frame=2), n_axes=4)
    diff = image_axes(fig)[2].images[0].get_array()
    np.testing.assert_allclose(diff, torch.linalg.vector_norm(c - u, dim=1)[0, 2].numpy(), rtol=1e-5)
    preview = lambda z: np.clip(np.moveaxis(np.asarray(z)[..., :3, :, :, :], -4, -1) * 0.2 + 0.5, 0, 1)
    fig = check(viz.guidance_parts(u.numpy()[0], c.numpy()[0], g.numpy()[0], preview_fn=preview), n_axes=4)
    assert image_axes(fig)[0].images[0].get_array().shape == (8, 8, 3)
    assert fig.get_supxlabel() == "width (latent pixels)"  # a preview: one cell per latent pixel
    frames = [RNG.uniform(size=(1, 16, 16, 3)) for _ in range(3)]  # images, F = 1
    fig = check(viz.guidance_parts(*frames), n_axes=4)
    assert fig.get_supxlabel() == "width (pixels)"
    np.testing.assert_allclose(image_axes(fig)[2].images[0].get_array(),
                               np.linalg.norm(frames[1][0] - frames[0][0], axis=-1), rtol=1e-5)
    with pytest.raises(ValueError, match="frame=3 is out of range for 3 frames"):
        viz.guidance_parts(u, c, g, frame=3)
    with pytest.raises(ValueError, match=r"\(4, 8\)"):
        viz.guidance_parts(*[np.zeros((4, 8))] * 3)
    with pytest.raises(ValueError, match="one shape"):
        viz.guidance_parts(u, c[:, :2], g)


# ----------------------------------------------------------------------- frames and maps


def test_steps_frames_grid_has_one_image_per_step_and_frame():
    images = RNG.uniform(size=(3, 4, 16, 20, 3)).astype(np.float32)
    for a in both(images):
        fig = check(viz.steps_frames_grid(a), n_axes=3 * 4)
    np.testing.assert_allclose(image_axes(fig)[5].images[0].get_array(), images[1, 1])
    assert image_axes(fig)[4].get_ylabel() == "step 1" and image_axes(fig)[1].get_title() == "frame 1"
    check(viz.steps_frames_grid((images[:1, :1] * 255).astype(np.uint8)), n_axes=1)  # S = F = 1, uint8
    fig = check(viz.steps_frames_grid(np.zeros((50, 2, 8, 8, 3)), max_rows=5), n_axes=5 * 2)
    assert "5 of 50 steps" in fig.get_suptitle()
    assert [ax.get_ylabel() for ax in image_axes(fig)[::2]] == ["step 0", "step 12", "step 24", "step 37", "step 49"]
    fig = viz.steps_frames_grid(images[:2, :1], step_labels=["t=900", "t=500"], frame_labels=["first"])
    assert image_axes(fig)[1].get_ylabel() == "t=500" and image_axes(fig)[0].get_title() == "first"
    # the side title says "denoising step" only where the rows are the steps
    assert viz.steps_frames_grid(images).get_supylabel() == "denoising step ↓"
    assert fig.get_supylabel() == ""  # rows named by step_labels (seeds, clips, settings): no side title
    seeds = viz.steps_frames_grid(np.zeros((12, 1, 8, 8, 3)), step_labels=[f"seed {k}" for k in range(12)],
                                  row_title="seed ↓")
    assert seeds.get_supylabel() == "seed ↓"
    assert "8 of 12 rows" in seeds.get_suptitle()
    with pytest.raises(ValueError, match=r"\(4, 16, 20, 3\)"):
        viz.steps_frames_grid(images[0])
    with pytest.raises(ValueError, match="step_labels has 1 labels for 3 steps"):
        viz.steps_frames_grid(images, step_labels=["x"])


def test_latent_channels(run):
    fig = check(viz.latent_channels(run.latents, frame=1), n_axes=4)
    clims = {ax.images[0].get_clim() for ax in image_axes(fig)}
    assert len(clims) == 1 and clims.pop()[0] == -max(abs(float(run.latents[0, :, 1].min())),
                                                      abs(float(run.latents[0, :, 1].max())))
    assert "mean" in image_axes(fig)[0].get_title()
    check(viz.latent_channels(RNG.normal(size=(6, 1, 4, 8)), frame=0), n_axes=6)  # 2 rows, F = 1, numpy
    with pytest.raises(ValueError, match="frame=3 is out of range"):
        viz.latent_channels(run.latents, frame=3)
    with pytest.raises(ValueError, match=r"\(4, 8, 8\)"):
        viz.latent_channels(torch.zeros(4, 8, 8))


def test_word_heatmaps():
    frames = RNG.uniform(size=(3, 32, 32, 3)).astype(np.float32)
    maps = RNG.uniform(size=(2, 3, 4, 4)).astype(np.float32)
    for f, m in zip(both(frames), both(maps)):
        fig = check(viz.word_heatmaps(f, m, ["red", "circle"]), n_axes=2 * 3)
    grey, overlay = image_axes(fig)[0].images
    assert grey.get_array().shape == (32, 32) and grey.get_cmap().name == "gray"  # the frame, in greyscale
    assert overlay.get_array().shape == (32, 32)
    colours = overlay.get_cmap()(np.linspace(0, 1, 5))  # [5, RGBA]: one hue, more opaque as attention grows
    assert np.allclose(colours[:, :3], colours[0, :3]) and colours[0, 3] == 0 and np.all(np.diff(colours[:, 3]) > 0)
    limits = {im.get_clim() for ax in image_axes(fig) for im in ax.images[1:]}
    assert limits == {(float(maps.min()), float(maps.max()))}  # one scale for every word and frame
    assert image_axes(fig)[3].get_ylabel() == "circle"
    check(viz.word_heatmaps(frames[:1], maps[:1, :1], ["red"]), n_axes=1)  # F = 1, one word
    with pytest.raises(ValueError, match=r"maps has shape \(2, 2, 4, 4\)"):
        viz.word_heatmaps(frames, maps[:, :2], ["red", "circle"])
    with pytest.raises(ValueError, match="1 words for 2 maps"):
        viz.word_heatmaps(frames, maps, ["red"])


def test_word_heatmaps_label_each_row_with_its_on_off_ratio():
    frames = np.full((2, 32, 32, 3), 0.5, np.float32)
    maps = np.ones((2, 2, 4, 4), np.float32)
    mask = np.zeros((2, 4, 4), bool)
    mask[:, 1:3, 1:3] = True  # the "shape": 4 of 16 latent pixels in each frame
    maps[0][mask] = 3.0  # word 0 takes 3 times as much attention on the shape as off it; word 1 is even
    fig = viz.word_heatmaps(frames, maps, ["circle", "right"], mask=mask)
    rows = [ax.get_ylabel() for ax in image_axes(fig)[::2]]
    assert rows == ["circle\non/off 3.00", "right\non/off 1.00"]
    big = np.repeat(np.repeat(mask, 8, axis=1), 8, axis=2)  # the same mask on the frames' grid, [F, H, W]
    assert image_axes(viz.word_heatmaps(frames, maps, ["circle", "right"], mask=big))[0].get_ylabel().startswith(
        "circle\non/off 2.")  # the upsampled maps blur the edge: less than 3, more than 2
    given = viz.word_heatmaps(frames, maps, ["circle", "right"], ratios=torch.tensor([1.5, 0.25]))
    assert image_axes(given)[2].get_ylabel() == "right\non/off 0.25"
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3, 3\).*\(2, 4, 4\)"):
        viz.word_heatmaps(frames, maps, ["circle", "right"], mask=mask[:, :3, :3])
    with pytest.raises(ValueError, match="1 ratios for 2 words"):
        viz.word_heatmaps(frames, maps, ["circle", "right"], ratios=[1.0])
    with pytest.raises(ValueError, match="not both"):
        viz.word_heatmaps(frames, maps, ["circle", "right"], mask=mask, ratios=[1.0, 1.0])


def test_temporal_attention():
    m = torch.softmax(torch.randn(4, 4), dim=-1)
    fig = check(viz.temporal_attention(m), n_axes=1)
    assert "query frame" in fig.axes[0].get_ylabel() and "key frame" in fig.axes[0].get_xlabel()
    fig = check(viz.temporal_attention([m.numpy()] * 4, titles=list("abcd")), n_axes=4)
    assert len(fig.axes) == 8  # 4 maps, 4 colorbars
    check(viz.temporal_attention(np.ones((1, 1))), n_axes=1)  # F = 1
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        viz.temporal_attention(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="1 titles"):
        viz.temporal_attention([m, m], titles=["a"])


@pytest.mark.parametrize("name", ["euler", "unipc"])
def test_flow_schedule_plots_and_tabulates_sigma(name):
    """For flow matching the schedule is x_t = (1 - σ) x_0 + σ noise, σ = t / T: the table's σ column is the
    scheduler's own sigmas at the run's timesteps."""
    import diffusers

    from t2v_nb import schedulers

    sched = schedulers.make_scheduler(name, diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0))
    sched.set_timesteps(6)
    html = viz.schedule_table_html(sched, sched.timesteps)
    assert "σ" in html and "ᾱ" not in html
    for sigma in sched.sigmas[:-1].tolist():
        assert f"{sigma:.4f}" in html
    fig = viz.noise_schedule(sched, sched.timesteps)
    labels = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
    assert "noise scale σ = t / T" in labels
