"""Pictures people look at: reconstruction grids, z_f/z_t swap grids and GIFs, prior samples."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.utils import make_grid, save_image


def _as_images(seq: torch.Tensor, kind: str) -> torch.Tensor:
    """[N, T, C, H, W] frames (video) or [N, T, bins] features (audio: one spectrogram image per sequence)."""
    if kind == "audio":
        s = seq.transpose(1, 2).flip(1)  # [N, bins, T], low frequencies at the bottom
        s = (s - s.amin((1, 2), keepdim=True)) / (s.amax((1, 2), keepdim=True) - s.amin((1, 2), keepdim=True) + 1e-8)
        return s[:, None, None].expand(-1, 1, 3, -1, -1)
    return seq


def rows_grid(rows: list[torch.Tensor], kind: str) -> torch.Tensor:
    """Each row a sequence [T, C, H, W]; returns one image tensor."""
    frames = torch.cat([_as_images(r[None].float().cpu(), kind)[0] for r in rows])
    return make_grid(frames.clamp(0, 1), nrow=len(frames) // len(rows), padding=1, pad_value=1.0)


def name_of(model) -> str:
    """The name a model was built under (`zoo.build_model`), else its class's."""
    return getattr(model, "registered_name", type(model).__name__)


def save_captioned(img: torch.Tensor, path: Path, title: str, row_labels: list[str] | None = None,
                   footer: str = "") -> Path:
    """Save a grid image with its caption above, a label left of each row and a note below, so that the picture
    says what it shows where it is seen (MLflow's artifact view and image compare have no other caption)."""
    from PIL import Image, ImageDraw, ImageFont
    arr = (img.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    im = Image.fromarray(arr)
    if im.height < 400:  # small sprites: twice the size, so that a face or a digit can be seen
        im = im.resize((im.width * 2, im.height * 2), Image.NEAREST)
    font = ImageFont.load_default()
    line = 14
    wrap = max(40, (im.width + 100) // 6)
    head = [title[i:i + wrap] for i in range(0, len(title), wrap)]
    foot = [footer[i:i + wrap] for i in range(0, len(footer), wrap)] if footer else []
    left = 8 + 6 * max(map(len, row_labels)) if row_labels else 0
    canvas = Image.new("RGB", (im.width + left, im.height + line * (len(head) + len(foot)) + 6), "white")
    canvas.paste(im, (left, line * len(head) + 3))
    draw = ImageDraw.Draw(canvas)
    for k, text in enumerate(head):
        draw.text((3, 2 + k * line), text, fill="black", font=font)
    if row_labels:
        h = im.height / len(row_labels)
        for k, text in enumerate(row_labels):
            draw.text((3, line * len(head) + 3 + k * h + h / 2 - 5), text, fill="black", font=font)
    for k, text in enumerate(foot):
        draw.text((3, line * len(head) + 5 + im.height + k * line), text, fill="dimgray", font=font)
    canvas.save(path)
    return Path(path)


def _time_axis(model) -> str:
    return "columns: time steps t = 1..T" if model.info.kind == "video" else "x axis: time frames, y axis: mel bins"


@torch.no_grad()
def reconstruction_grid(model, x: torch.Tensor, path: Path, n: int = 4) -> Path:
    """Pairs of rows: a real sequence, then its reconstruction from posterior means."""
    lat = model.encode(x[:n], sample=False)
    rec = model.decode(lat.zf_mean, lat.zt_mean)
    k = min(n, len(x))
    rows = [r for i in range(k) for r in (x[i], rec[i])]
    labels = [lab for i in range(k) for lab in (f"real {i}", f"recon {i}")]
    return save_captioned(rows_grid(rows, model.info.kind), path,
                          f"Reconstruction ({name_of(model)}): each real sequence, then its decoding from the "
                          "posterior means of z_f and z_1:T", labels, _time_axis(model))


@torch.no_grad()
def swap_sequences(model, x: torch.Tensor, n: int = 4) -> torch.Tensor:
    """[n, n, T, ...]: cell (i, j) decodes z_f of sequence i with z_{1:T} of sequence j."""
    lat = model.encode(x[:n], sample=False)
    zf = lat.zf_mean.repeat_interleave(n, 0)
    zt = lat.zt_mean.repeat(n, 1, 1)
    out = model.decode(zf, zt)
    return out.view(n, n, *out.shape[1:])


def swap_grid(model, x: torch.Tensor, path: Path, n: int = 4) -> Path:
    """Row i keeps the appearance (z_f) of sequence i; column block j takes the motion (z_t) of sequence j.
    First row block: the real sequences."""
    sw = swap_sequences(model, x, n)
    rows = [x[j] for j in range(n)] + [sw[i, j] for i in range(n) for j in range(n)]
    labels = [f"real {j}" for j in range(n)] + [f"f{i} t{j}" for i in range(n) for j in range(n)]
    return save_captioned(rows_grid(rows, model.info.kind), path,
                          f"Swap ({name_of(model)}): row 'f i t j' decodes z_f of real i (keeps its appearance) "
                          "with z_1:T of real j (keeps its motion); the first rows are the real sequences",
                          labels, _time_axis(model))


def swap_gif(model, x: torch.Tensor, path: Path, n: int = 4, scale: int = 2) -> Path:
    """Animated swap matrix: top row the motion sources, left column the appearance sources."""
    from PIL import Image
    sw = swap_sequences(model, x, n).float().cpu()
    if model.info.kind != "video":
        raise ValueError("swap GIFs are for video datasets")
    real = x[:n].float().cpu()
    t, c, h, w = real.shape[1:]
    frames = []
    for k in range(t):
        canvas = torch.ones(c, (n + 1) * h, (n + 1) * w)
        for j in range(n):
            canvas[:, :h, (j + 1) * w:(j + 2) * w] = real[j, k]
            canvas[:, (j + 1) * h:(j + 2) * h, :w] = real[j, 0]
            for i in range(n):
                canvas[:, (i + 1) * h:(i + 2) * h, (j + 1) * w:(j + 2) * w] = sw[i, j, k]
        img = (canvas.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        if c == 1:
            img = img[..., 0]
        frames.append(_gif_caption(Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale),
                                                               Image.NEAREST), k, t))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=150, loop=0)
    return Path(path)


def _gif_caption(im, k: int, t: int):
    """The swap GIF's own legend: which axis keeps appearance and which keeps motion, and the time step."""
    from PIL import Image, ImageDraw
    out = Image.new("RGB", (im.width, im.height + 30), "white")
    out.paste(im.convert("RGB"), (0, 30))
    draw = ImageDraw.Draw(out)
    draw.text((3, 2), "cell (row i, col j): appearance z_f of the left frame i,", fill="black")
    draw.text((3, 15), f"motion z_1:T of the top sequence j   t = {k + 1}/{t}", fill="black")
    return out


@torch.no_grad()
def sample_grid(model, steps: int, path: Path, n: int = 6) -> Path:
    """Sequences generated from the prior (z_f ~ N(0, I), z_{1:T} from the learned prior), or by a generator."""
    if "sample" in model.capabilities:
        lat = model.sample_prior(n, steps)
        out = model.decode(lat.zf, lat.zt)
        how = "z_f ~ N(0, I), z_1:T from the learned prior"
    else:
        out = model.generate({}, steps, n=n)
        how = "the generator's noise, no labels"
    return save_captioned(rows_grid(list(out), model.info.kind), path,
                          f"Samples ({name_of(model)}): one generated sequence per row, {how}",
                          [f"sample {i}" for i in range(len(out))], _time_axis(model))


def dataset_preview(ds, stem: Path, n: int = 6) -> list[Path]:
    """A grid of the first n test sequences (one row each) and, for video, an animated GIF of them."""
    from PIL import Image
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if "utterance" in ds.tensors:
        return [utterance_preview(ds, stem.with_suffix(".png"), n)]
    x = ds.batch(torch.arange(min(n, len(ds))))["x"]
    paths = [stem.with_suffix(".png")]
    save_image(rows_grid(list(x), ds.info.kind), paths[0])
    if ds.info.kind == "video":
        frames = []
        for t in range(x.shape[1]):
            img = make_grid(x[:, t], nrow=len(x), padding=1, pad_value=1.0)
            arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            frames.append(Image.fromarray(arr).resize((arr.shape[1] * 2, arr.shape[0] * 2), Image.NEAREST))
        paths.append(stem.with_suffix(".gif"))
        frames[0].save(paths[1], save_all=True, append_images=frames[1:], duration=150, loop=0)
    return paths


def utterance_preview(ds, path: Path, n: int = 6) -> Path:
    """Speech: whole utterances (their segments in order) as log-mel spectrograms, two per speaker,
    with the per-frame speech/silence label (the DFP target) as a strip under each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = ds.tensors
    picked, per_speaker = [], {}
    for u in torch.unique(t["utterance"]).tolist():
        spk = int(t["static"][t["utterance"] == u][0, 0])
        if per_speaker.get(spk, 0) < 2:
            per_speaker[spk] = per_speaker.get(spk, 0) + 1
            picked.append((spk, u))
        if len(picked) == n:
            break
    fig, axes = plt.subplots(2 * len(picked), 1, figsize=(9, 1.6 * len(picked)),
                             gridspec_kw={"height_ratios": [8, 1] * len(picked)})
    for i, (spk, u) in enumerate(picked):
        rows = (t["utterance"] == u).nonzero()[:, 0]
        mel = t["x"][rows].flatten(0, 1).T.float().numpy()      # [bins, frames], segments in order
        sil = t["dfp"][rows].flatten(0, 1).reshape(1, -1).float().numpy()
        axes[2 * i].imshow(mel, origin="lower", aspect="auto", cmap="magma")
        axes[2 * i].set_title(f"speaker {spk}, utterance {u} ({len(rows)} segments of {ds.info.frames} frames)",
                              fontsize=8, loc="left")
        axes[2 * i + 1].imshow(sil, aspect="auto", cmap="Greys", vmin=0, vmax=1)
        for ax in axes[2 * i: 2 * i + 2]:
            ax.set_xticks([]), ax.set_yticks([])
    axes[-1].set_xlabel("10 ms frames; strips: the per-frame DFP target (black = speech, white = silence)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
