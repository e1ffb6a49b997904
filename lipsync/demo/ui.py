"""The page: the Gradio Blocks layout of the *Dub* and *MARLIN* tabs, wired to :class:`Demo`.

Both tabs' buttons share one queue slot group (``concurrency_id="model"``) limited to
``DemoConfig.concurrency`` requests at once; each handler is wrapped by :func:`.checks.guarded`.
"""

from __future__ import annotations

from ..inference.options import BLEND_REGIONS, FACE_BACKENDS, LOOP_MODES, DubOptions
from .checks import guarded
from .config import OUTPUT_SIZES, X264_PRESETS, DemoConfig, build_options, find_examples
from .handlers import Demo

_INTRO = """# MARLIN lip-sync
Give a face (video or photo) and new speech; the mouth is re-animated to speak it.
Runs on this machine; nothing is uploaded anywhere."""


def build_app(config: DemoConfig | None = None, demo: Demo | None = None):
    """The queued Gradio Blocks app: tab *Dub* (API name ``/dub``) and tab *MARLIN* (``/marlin``)."""
    import gradio as gr

    from marlin.masking import MASKING_STRATEGIES

    demo = demo or Demo(config)
    cfg, d = demo.config, DubOptions()
    choices = demo.checkpoint_choices()
    limits = f"Limits: {cfg.max_upload_mb:g} MiB per file, {cfg.max_seconds:g} s of video or audio."

    def dub(video: str | None, photo: str | None, audio: str | None, checkpoint: str | None,
            checkpoint_path: str, face_backend: str, face: str, box: str, pads: str, smooth: float,
            max_gap: str, resize: float, blend: str, color_match: bool, loop: str, keep_video: bool,
            fps: float, output_size: str, crf: float, preset: str, batch_size: float,
            keep_detail: bool = True, progress=gr.Progress()):  # noqa: B008 - Gradio's progress idiom
        options = build_options(face_backend, face, box, pads, smooth, max_gap, resize, blend, color_match,
                                loop, keep_video, fps, crf, preset, batch_size, keep_detail)
        return demo.dub(video, photo, audio, checkpoint, checkpoint_path, output_size, options, progress)

    def marlin(clip: str | None, checkpoint: str | None, checkpoint_path: str, strategy: str,
               mask_ratio: float, crop_face: bool, seed: float, keep_seq: bool,
               progress=gr.Progress()):  # noqa: B008
        r = demo.marlin(clip, checkpoint, checkpoint_path, strategy, mask_ratio, crop_face, seed, keep_seq,
                        progress)
        return r.grid, r.video, r.features, r.summary

    def rescan():
        found = demo.checkpoint_choices()
        return gr.Dropdown(choices=found), gr.Dropdown(choices=found)

    age = int(cfg.keep_hours * 3600)  # Gradio's copies of uploads and outputs are deleted after this
    with gr.Blocks(title="MARLIN lip-sync", analytics_enabled=False, delete_cache=(max(60, age // 4), age)
                   ) as app:
        gr.Markdown(_INTRO)
        with gr.Tab("Dub", id="dub"):
            with gr.Row():
                with gr.Column():
                    with gr.Tab("Video"):
                        video = gr.Video(label="Face video", sources=["upload", "webcam"], include_audio=True,
                                         elem_id="dub-video")
                    with gr.Tab("Photo"):
                        photo = gr.Image(label="Face photo", sources=["upload", "webcam", "clipboard"],
                                         type="filepath", format="png", elem_id="dub-photo")
                    audio = gr.Audio(label="New speech", sources=["upload", "microphone"], type="filepath",
                                     elem_id="dub-audio")
                    with gr.Row():
                        ckpt = gr.Dropdown(choices, value=demo.default_choice(), label="Checkpoint",
                                           info=f"files in {cfg.checkpoints_dir}", scale=3)
                        rescan_btn = gr.Button("Rescan", size="sm", scale=1)
                    ckpt_path = gr.Textbox("", label="...or a checkpoint path",
                                           placeholder="/path/to/wav2lip_gan.pth")
                    with gr.Accordion("Advanced options (as python -m lipsync.infer)", open=False):
                        with gr.Row():
                            backend = gr.Dropdown(list(FACE_BACKENDS), value=d.face_backend,
                                                  label="Face detector")
                            face = gr.Textbox("largest", label="Face", info="largest, index:N or point:X,Y")
                            box = gr.Textbox("", label="Fixed face box",
                                             info="x1,y1,x2,y2 pixels: no detection")
                        with gr.Row():
                            pads = gr.Textbox(",".join(map(str, d.pads)), label="Pads",
                                              info="top,bottom,left,right")
                            smooth = gr.Slider(1, 25, d.smooth_window, step=1, label="Box smoothing (frames)")
                            max_gap = gr.Textbox("", label="Max gap (frames)",
                                                 info="empty: the tracker's default")
                        with gr.Row():
                            resize = gr.Slider(1, 4, d.resize, step=0.5, label="Detect on frames shrunk by")
                            blend = gr.Dropdown(list(BLEND_REGIONS), value=d.blend, label="Blend region")
                            color = gr.Checkbox(d.color_match, label="Match colour")
                            detail = gr.Checkbox(d.keep_detail, label="Keep skin detail",
                                                 info="the frame's own detail where the face is unchanged")
                        with gr.Row():
                            loop = gr.Radio(list(LOOP_MODES), value=d.loop, label="Audio longer than video")
                            keep = gr.Checkbox(d.keep_video, label="Keep the rest of a longer video")
                            fps = gr.Number(d.fps, label="Frame rate for a photo", minimum=1, maximum=240)
                        with gr.Row():
                            size = gr.Dropdown(list(OUTPUT_SIZES), value="original", label="Output size")
                            crf = gr.Slider(0, 51, d.crf, step=1, label="Quality (x264 CRF)")
                            preset = gr.Dropdown(list(X264_PRESETS), value=d.preset, label="x264 preset")
                            batch = gr.Slider(1, 64, d.batch_size, step=1, label="Batch size")
                    run = gr.Button("Dub", variant="primary", elem_id="dub-button")
                    gr.Markdown(limits)
                with gr.Column():
                    dubbed = gr.Video(label="Dubbed video", interactive=False, elem_id="dub-output")
                    both = gr.Video(label="Before | after", interactive=False, elem_id="dub-before-after")
                    summary = gr.JSON(label="Run summary", elem_id="dub-summary")
            rows = find_examples(cfg.assets_dir)
            if rows:
                gr.Examples(rows, inputs=[video, photo, audio], label=f"Examples from {cfg.assets_dir}")
            else:
                gr.Markdown(f"No bundled examples: put face videos and speech files in `{cfg.assets_dir}`.")
        with gr.Tab("MARLIN", id="marlin"):
            gr.Markdown("Mask a face clip as in MARLIN pretraining, see what the model reconstructs, and "
                        "download the clip's features (one row per window of frames).")
            with gr.Row():
                with gr.Column():
                    clip = gr.Video(label="Face clip", sources=["upload", "webcam"], include_audio=True,
                                    elem_id="marlin-clip")
                    m_ckpt = gr.Dropdown(choices, value=demo.default_choice("marlin"),
                                         label="MARLIN checkpoint",
                                         info="a MARLIN file, or a MARLIN lip-sync model (its encoder)")
                    m_path = gr.Textbox("", label="...or a checkpoint path",
                                        placeholder="marlin_vit_base_ytf.full.pt")
                    strategy = gr.Radio(list(MASKING_STRATEGIES), value="tube", label="Masking")
                    ratio = gr.Slider(0.0, 0.95, 0.75, step=0.05, label="Mask ratio")
                    with gr.Row():
                        crop = gr.Checkbox(True, label="Crop the face")
                        seed = gr.Number(0, label="Seed", precision=0)
                        seq = gr.Checkbox(False, label="Per-token features")
                    m_run = gr.Button("Mask and reconstruct", variant="primary", elem_id="marlin-button")
                with gr.Column():
                    grid = gr.Image(label="Clip / masked input / reconstruction", type="filepath",
                                    interactive=False, elem_id="marlin-grid")
                    m_video = gr.Video(label="Clip | masked | reconstruction", interactive=False)
                    feats = gr.File(label="Features (.npy)", interactive=False, elem_id="marlin-features")
                    m_summary = gr.JSON(label="Summary", elem_id="marlin-summary")
        rescan_btn.click(rescan, None, [ckpt, m_ckpt], api_name=False, queue=False)
        dub_inputs = [video, photo, audio, ckpt, ckpt_path, backend, face, box, pads, smooth, max_gap, resize,
                      blend, color, loop, keep, fps, size, crf, preset, batch, detail]
        run.click(guarded(dub), dub_inputs, [dubbed, both, summary], api_name="dub",
                  concurrency_limit=cfg.concurrency, concurrency_id="model")
        m_run.click(guarded(marlin), [clip, m_ckpt, m_path, strategy, ratio, crop, seed, seq],
                    [grid, m_video, feats, m_summary], api_name="marlin", concurrency_limit=cfg.concurrency,
                    concurrency_id="model")
    app.queue(max_size=cfg.max_queue, default_concurrency_limit=cfg.concurrency)
    app.demo = demo  # the handlers, for scripts and tests
    return app
