"""Train: start a VAE from the app, then watch its ELBO, reconstruction, KL and latent space live.

Training runs in a process of its own (`vae_core.jobs`), so leaving or reloading this page does not
stop it; the page only reads the run's files, refreshing every few seconds while it trains.
"""

import os
from dataclasses import asdict, replace

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots
from streamlit.delta_generator import DeltaGenerator

from explorer import figures, loaders, meta, paths, widgets
from vae_core import DATASETS, DatasetError, jobs, load_images, timelapse
from vae_core.data import FOLDER, available
from vae_core.folder import IMAGE_SUFFIXES, ImportReport, import_folder
from vae_core.jobs import Evaluation, Run, RunError, Status
from vae_core.presets import resolve
from vae_core.records import EpochRecord, Record, StepRecord, read_metrics
from vae_core.spec import FormField, RunSpec, form_fields, parse_ints
from vae_core.training import with_folder

REFRESH_S = float(os.environ.get("VAE_TRAIN_REFRESH_S", "2"))  # how often a training run is re-read
MORE_EPOCHS = 10  # a finished run offers to train this many epochs further
CONTROL_COLUMNS = [1, 2, 2]  # a run's controls: a number, its button, room
MISSING = "t_missing"  # (dataset, why, from an explicit folder) of the last Start refused for want of data
REPORT = "t_report"  # (run name, summary) of the folder imported for the last run started
BADGES = {
    Status.RUNNING: "blue",
    Status.FINISHED: "green",
    Status.STOPPED: "orange",
    Status.DIVERGED: "red",
    Status.FAILED: "red",
}

widgets.page("Train")  # the picker too: a finished run can be opened from here


# ---------------------------------------------------------------- starting a run


# Options whose default depends on the data (the likelihood: logistic for colour, bernoulli for grey):
# the form offers FROM_DATA first, and a choice made explicitly is kept even when it is the default.
FROM_DATA = "from the data"
DATA_DEFAULTS = {("model", "likelihood")}


def spec_widget(box: DeltaGenerator, f: FormField) -> object:
    """The widget of one spec option, from its declaration: choices, a number range, or a list."""
    opt, key = f.option, f"t_{f.key}"
    if opt.choices:
        choices = (FROM_DATA, *opt.choices) if (f.section, f.name) in DATA_DEFAULTS else opt.choices
        index = choices.index(FROM_DATA if choices[0] == FROM_DATA else f.initial)
        shown = dataset_label if (f.section, f.name) == ("data", "name") else str
        if len(choices) <= 3:
            return box.radio(
                opt.label, choices, index, key=key, horizontal=True, help=opt.help, format_func=shown
            )
        return box.selectbox(opt.label, choices, index, key=key, help=opt.help, format_func=shown)
    if f.kind is tuple:  # several whole numbers, typed as text and read by parse_ints
        return box.text_input(opt.label, " ".join(map(str, f.initial)), key=key, help=opt.help)
    if f.kind is int:
        return box.number_input(opt.label, int(opt.min), int(opt.max), f.initial, key=key, help=opt.help)
    step = opt.step or 0.01
    return box.number_input(
        opt.label, float(opt.min), float(opt.max), float(f.initial), step=step, format="%g", key=key,
        help=opt.help,
    )  # fmt: skip


def dataset_label(name: str) -> str:
    """A dataset as the form offers it: marked when its files are not on this machine."""
    if name == "folder":  # the data folder (under Advanced) says which images
        return "folder (your images: give the data folder)"
    return name if available(name)[0] else f"{name} (not downloaded)"


def spec_columns() -> dict[str, list[DeltaGenerator]]:
    """Where each section's widgets go: data and model a column each, training two."""
    data, model, *train = st.columns(4)
    return {"data": [data], "model": [model], "train": train}


def read_form(values: dict[tuple[str, str], object]) -> RunSpec:
    """The spec the form's values describe, the preset filling the options left at their defaults;
    ValueError naming the option if one is out of range."""
    by_section: dict[str, dict[str, object]] = {}
    for f in form_fields():
        value = values[f.section, f.name]
        value = parse_ints(value, f.option.label) if f.kind is tuple else value
        if value == FROM_DATA:
            continue  # the spec picks it from the data
        if value != f.default or (f.section, f.name) in DATA_DEFAULTS:
            by_section.setdefault(f.section, {})[f.name] = value
    return resolve(by_section)


def new_run_form() -> None:
    with st.form("new_run"):
        columns, values = spec_columns(), {}
        sections = {section: [f for f in form_fields() if f.section == section] for section in columns}
        for section, section_fields in sections.items():
            boxes = columns[section]
            per_box = -(-len(section_fields) // len(boxes))
            for i, f in enumerate(section_fields):
                values[f.section, f.name] = spec_widget(boxes[i // per_box], f)
        name = columns["data"][0].text_input(
            "run name",
            key="t_name",
            placeholder="e.g. mnist-2d-beta4",
            help="the folder under runs/ that holds the checkpoint and its log",
        )
        with st.expander("Advanced"):
            data_dir = st.text_input(
                "data folder",
                key="t_data_dir",
                help="a folder on this server: the dataset's IDX files, or for the folder dataset your "
                "images (DIR/<class>/*.png, ...); empty: look the dataset up ($VAE_DATA_DIR, data/, "
                "download)",
            )
            limit = widgets.upload_limit_mb()
            data_zip = st.file_uploader(
                "or a zip of images (folder dataset)",
                type=["zip"],
                key="t_data_zip",
                max_upload_size=limit,
                help=f"<class>/*.png, ... (or images at its top; in one folder is fine), up to {limit} MB "
                f"(the server's maxUploadSize); unpacked under {paths.shown(paths.uploads_dir())}/, image "
                f"files only ({' '.join(IMAGE_SUFFIXES)}), and used as the data folder",
            )
            device = st.selectbox("device", ["auto", "cpu", "cuda", "mps"], key="t_device")
        if not st.form_submit_button("Start training", type="primary"):
            return
    try:
        spec = read_form(values)
        jobs.validate_run_name(name)  # a bad name or data folder is said before missing data
        folder = data_folder(spec, data_dir, data_zip)
        jobs.app_runtime(folder)
        ready, why = available(spec.data.name, folder)
        st.session_state[MISSING] = None if ready else (spec.data.name, why, folder is not None)
        if not ready:
            return
        if spec.data.name == FOLDER:
            spec = with_folder(spec, folder)  # the job names the images it trains on
            st.session_state[REPORT] = (name.strip(), import_images(spec).summary())
        started = jobs.start_run(name, spec, data_dir=folder, device=device)
    except (ValueError, DatasetError) as e:  # RunError, ArchiveError, the spec's checks, an empty folder
        st.error(widgets.plain(e))
        return
    except OSError as e:
        st.error(widgets.plain(f"Could not write in {jobs.runs_dir()}: {e}"))
        return
    st.session_state["t_run"] = started.name
    st.toast(widgets.plain(f"Started {started.name}"))


def data_folder(spec: RunSpec, typed: str, upload) -> str | None:
    """The run's data folder: the path typed, or the uploaded zip of images unpacked under the runs
    folder's uploads/ (a note says which entries were skipped); ValueError when both or misplaced."""
    if upload is None:
        return typed.strip() or None
    if spec.data.name != FOLDER:
        raise ValueError(f"A zip of images is for the {FOLDER} dataset: choose it, or remove the zip.")
    if typed.strip():
        raise ValueError("Give the data folder as a path or as a zip, not both: clear one of them.")
    unpacked = paths.unpack_images_zip(upload.getvalue(), upload.name)
    if unpacked.skipped:
        names = ", ".join(name for name, _ in unpacked.skipped[:3])
        st.info(widgets.plain(f"Skipped {len(unpacked.skipped)} entries of {upload.name} that are not images "
                              f"({names}{', …' * (len(unpacked.skipped) > 3)})."))  # fmt: skip
    return str(unpacked.folder)


def import_images(spec: RunSpec) -> ImportReport:
    """Import the spec's folder here, with a progress bar, so the report shows before the run starts;
    the trainer then reads the same cache instead of decoding again. DatasetError if nothing imports."""
    bar = st.progress(0.0, text="Importing images…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Importing images: {done} of {total}")

    try:
        return import_folder(spec.data.folder, progress=progress, **spec.data.folder_options()).report
    finally:
        bar.empty()


def import_report() -> None:
    """The import report of the folder the last run started here trains on."""
    if not st.session_state.get(REPORT):
        return
    name, summary = st.session_state[REPORT]
    with st.expander(f"import report of {name}: {summary.splitlines()[0]}"):
        st.code(summary, language=None, wrap_lines=True)


def missing_data() -> None:
    """Why the last Start was refused for want of data, with a download button when it may help."""
    if not st.session_state.get(MISSING):
        return
    name, why, explicit_folder = st.session_state[MISSING]
    st.error(f"Not started: {widgets.plain(why)}", icon=":material/folder_off:")
    if name == FOLDER:  # the images are the user's own: nothing to download
        st.info("Give the data folder (under Advanced): a path on this server or a zip of your images.")
        return
    if not explicit_folder and st.button(f"Download {name} now with torchvision (needs the internet)"):
        with st.spinner(f"Downloading {name}…"):
            try:
                for split in ("train", "test"):
                    load_images(name, split, download=True)
            except DatasetError as e:
                st.error(widgets.plain(e))
                return
        st.session_state[MISSING] = None
        st.rerun()


# ---------------------------------------------------------------- following a run


def curves(records: list[Record]) -> go.Figure:
    """Train terms per logged step, test terms per epoch, β, throughput and learning rate, by epoch."""
    steps = pd.DataFrame([asdict(r) for r in records if isinstance(r, StepRecord)])
    tests = pd.DataFrame([asdict(r) for r in records if isinstance(r, EpochRecord)])
    titles = (
        "ELBO (nats / image)",
        "reconstruction −log p(x|z) (nats / image)",
        "KL (nats / image)",
        "β (KL weight in the loss)",
        "throughput (images / s)",
        "learning rate",
    )
    fig = make_subplots(rows=2, cols=3, subplot_titles=titles, vertical_spacing=0.14)

    def curve(frame: pd.DataFrame, column: str, row: int, col: int, **style: object) -> None:
        if len(frame):
            fig.add_trace(go.Scatter(x=frame["epoch"], y=frame[column], **style), row, col)

    for col, term in enumerate(("elbo", "recon", "kl"), start=1):
        train = {"name": "train (per step)", "legendgroup": "train", "line": {"color": "#4c78a8"}}
        test = {"name": "test (per epoch)", "legendgroup": "test", "line": {"color": "#e45756"}}
        curve(steps, term, 1, col, mode="lines", showlegend=col == 1, **train)
        curve(tests, f"test_{term}", 1, col, mode="lines+markers", showlegend=col == 1, **test)
    for col, field in enumerate(("beta", "samples_per_s", "lr"), start=1):
        curve(steps, field, 2, col, mode="lines", showlegend=False, line={"color": "#72b7b2"})
    fig.update_xaxes(title_text="epoch", row=2)
    fig.update_yaxes(type="log", row=2, col=3)  # learning rates span decades
    fig.update_layout(
        height=560,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": 1.12, "x": 0},
    )
    return fig


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min" if hours else f"{m} min {s:02d} s"


def controls(run: Run, evaluation: Evaluation | None) -> None:
    """Stop a training run; resume a stopped one or train a finished one further; evaluate; delete."""
    try:
        if run.status is Status.RUNNING:
            if st.button("Stop (saves a checkpoint)", key="t_stop"):
                jobs.stop_run(run)
                st.toast(widgets.plain(f"Asked {run.name} to stop; it saves after its current step."))
            return
        busy = evaluation is not None and evaluation.running
        if run.has_checkpoint and not busy:
            resume_controls(run)
        evaluate_controls(run, evaluation)
        if not busy:
            delete_controls(run)
    except (RunError, OSError) as e:
        st.error(widgets.plain(e))


def resume_controls(run: Run) -> None:
    """Resume a stopped run to its total, or train a finished one further: always to a higher epoch."""
    done, limit = jobs.saved(run)[0], int(epochs_option().max)
    if done >= limit:
        return
    default = run.epochs if run.epochs > done else min(done + MORE_EPOCHS, limit)
    left, right, _ = st.columns(CONTROL_COLUMNS, vertical_alignment="bottom")
    total = left.number_input("train to epoch", done + 1, limit, default, key=f"t_total_{run.name}_{done}")
    verb = "Train further" if run.status is Status.FINISHED else "Resume"
    if right.button(f"{verb} to epoch {total}", key="t_resume"):
        jobs.resume_run(run, epochs=total)
        st.rerun()


def epochs_option():
    return next(f.option for f in form_fields() if f.name == "epochs")


def evaluate_controls(run: Run, evaluation: Evaluation | None) -> None:
    """The test NLL of the run's checkpoint: shown when measured, measured in a process of its own."""
    metrics = jobs.saved(run)[1]
    if evaluation is not None and evaluation.running:
        st.progress(0.0, text=f"Evaluating: test ELBO and NLL (IWAE, k = {evaluation.k})…")
        last = evaluation.log.splitlines()[-1] if evaluation.log else "starting…"
        st.code(last, language=None, wrap_lines=True)
        return
    if evaluation is not None and evaluation.failed:
        failed = f"The evaluation failed (exit code {evaluation.exit_code}):\n{evaluation.log}"
        st.error(widgets.plain(failed))
    if "nll" in metrics:
        k = metrics.get("nll_k")
        st.metric("test NLL (nats / image)", f"{metrics['nll']:.2f}", help=f"IWAE, k = {k}")
    if not (run.path / "model.pt").is_file():
        return
    left, right, _ = st.columns(CONTROL_COLUMNS, vertical_alignment="bottom")
    k = left.number_input("k (importance samples)", 1, 100_000, jobs.EVAL_K, key=f"t_k_{run.name}")
    how = "runs `python -m vae_core evaluate RUN --write` in a process of its own; the NLL goes into the card"
    if right.button(f"Evaluate (NLL, k = {k})", key="t_evaluate", help=how):
        jobs.start_evaluation(run, int(k))
        st.rerun()


def delete_controls(run: Run) -> None:
    """Delete the run's folder, after a confirmation."""
    confirm = f"t_delete_{run.name}"
    if not st.session_state.get(confirm):
        st.button("Delete run…", key="t_delete", on_click=st.session_state.__setitem__, args=(confirm, True),
                  icon=":material/delete:")  # fmt: skip
        return
    st.warning(widgets.plain(f"Delete {run.path} and everything in it (checkpoint, log, timelapse)?"))
    yes, no, _ = st.columns(CONTROL_COLUMNS)
    no.button("Keep it", key="t_keep", on_click=st.session_state.pop, args=(confirm, None))
    if yes.button("Delete", key="t_delete_yes", type="primary"):
        st.session_state.pop(confirm)
        jobs.delete_run(run)
        st.session_state.pop("t_run", None)
        st.toast(widgets.plain(f"Deleted {run.name}."))
        st.rerun(scope="app")


def summary(run: Run, records: list[Record]) -> None:
    progress = jobs.progress(run, records)
    st.markdown(f"**{run.name}** · :{BADGES[run.status]}-badge[{run.status}]")
    st.progress(
        progress.fraction,
        text=f"epoch {progress.epoch:.2f} of {progress.epochs} · time left ≈ {duration(progress.eta_s)}",
    )
    last_step = next((r for r in reversed(records) if isinstance(r, StepRecord)), None)
    last_test = next((r for r in reversed(records) if isinstance(r, EpochRecord)), None)
    cells = st.columns(5)
    if last_step:
        cells[0].metric("train ELBO (nats / image)", f"{last_step.elbo:.2f}")
        cells[3].metric("throughput (images / s)", f"{last_step.samples_per_s:.0f}")
        cells[4].metric("β", f"{last_step.beta:.3g}")
    if last_test and last_test.test_elbo is not None:
        cells[1].metric("test ELBO (nats / image)", f"{last_test.test_elbo:.2f}")
        cells[2].metric("test recon + KL", f"{last_test.test_recon:.1f} + {last_test.test_kl:.1f}")


def outcome(run: Run) -> None:
    if run.status in (Status.FAILED, Status.DIVERGED):
        st.error(widgets.plain(f"{run.name} {run.status}: {run.message}"))
        st.code(jobs.tail_log(run, 12), language=None, wrap_lines=True)
    elif run.status is Status.STOPPED:
        st.info(widgets.plain(run.message))
    elif run.status is Status.FINISHED:
        name = paths.shown(run.path)
        if name in paths.checkpoint_options():
            st.success(widgets.plain(f"Finished: {name} is in the checkpoint picker."))
            st.page_link(
                "pages/1_Latent_grid.py",
                label="Explore it on the Latent grid page",
                icon=":material/grid_on:",
                query_params={"ckpt": name},
            )
        else:
            st.success(widgets.plain(f"Finished: the checkpoint is in {run.path}."))


def timelapse_view(run: Run) -> None:
    st.subheader("Latent timelapse")
    available = timelapse.epochs(run.path)
    if not available:
        st.caption("The decoded grid and the map of 1000 test images appear after the first epoch.")
        return
    epoch = available[-1]
    if len(available) > 1 and not st.toggle("follow the latest epoch", True, key="t_follow"):
        epoch = st.select_slider("epoch", available, value=available[-1], key=f"t_epoch_{run.name}")
    snap = timelapse.load_snapshot(run.path, epoch)
    grid, points = st.columns(2)
    with grid:
        widgets.picture(
            widgets.grid_png(snap.images),
            caption=f"epoch {snap.epoch}: decoded prior quantiles of z[0], z[1] (other dimensions 0)",
            width=420,
        )
    with points:
        fig = figures.latent_map(
            points=snap.points,
            labels=snap.labels,
            classes=class_names(run),
            titles=snap.axis_titles,
        )
        fig.update_layout(height=440)
        st.plotly_chart(fig, key=f"t_map_{run.name}")
        st.caption(
            f"epoch {snap.epoch}: posterior means μ of the test subset"
            + ("" if snap.projection == "raw" else ", on their first two principal axes")
        )


def class_names(run: Run) -> tuple[str, ...]:
    """The run's class names: its dataset's, or its folder's (read from the import cache); none when
    its test set cannot be read."""
    data = run.spec.data
    if data.name in DATASETS:
        return DATASETS[data.name].classes
    if not data.folder and run.runtime.data_dir:  # the trainer names the folder in the checkpoint only
        data = replace(data, folder=run.runtime.data_dir)
    try:
        return loaders.test_set(meta.key_of(data)).classes
    except (DatasetError, OSError, ValueError):
        return ()


def runs_table(runs: list[Run]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run": [r.name for r in runs],
            "status": [str(r.status) for r in runs],
            "dataset": [r.spec.data.name for r in runs],
            "model": [
                f"{r.spec.model.arch} {'×'.join(map(str, r.spec.model.hidden))}, z {r.spec.model.latent_dim}"
                for r in runs
            ],
            "β": [r.spec.train.beta for r in runs],
            "epochs": [r.epochs for r in runs],
            "started": pd.to_datetime([r.started for r in runs], unit="s").strftime("%Y-%m-%d %H:%M"),
        }
    )


def busy(name: str) -> bool:
    """Whether the run trains or is being evaluated (its page then refreshes by itself)."""
    run = jobs.read_run(jobs.runs_dir() / name)
    evaluation = jobs.evaluation(run)
    return run.status is Status.RUNNING or (evaluation is not None and evaluation.running)


def follow(name: str) -> None:
    """The chosen run, re-read every REFRESH_S seconds while it trains or is being evaluated."""
    live = busy(name)

    @st.fragment(run_every=REFRESH_S if live else None)
    def view() -> None:
        if live and not busy(name):
            st.rerun()  # it has ended: redraw the whole page once, then stop polling
        run = jobs.read_run(jobs.runs_dir() / name)
        records = read_metrics(run.path)
        summary(run, records)
        controls(run, jobs.evaluation(run))
        outcome(run)
        if records:
            st.plotly_chart(curves(records), key=f"t_curves_{name}")
        elif run.status is Status.RUNNING:
            st.caption("Waiting for the first metrics (every 20 steps)…")
        timelapse_view(run)
        with st.expander("log"):
            st.code(jobs.tail_log(run, 30) or "(empty)", language=None, wrap_lines=True)

    view()


new_run_form()
missing_data()
import_report()
st.divider()
st.subheader("Runs")
try:
    runs = {run.name: run for run in jobs.list_runs()}
except (OSError, ValueError) as e:
    st.error(widgets.plain(f"Cannot read the runs in {jobs.runs_dir()}: {e}"))
    st.stop()
if not runs:
    st.info(widgets.plain(f"No runs yet in {jobs.runs_dir()}: start one above."))
    st.stop()
if st.session_state.get("t_run") not in runs:
    st.session_state["t_run"] = next(iter(runs))
chosen = st.selectbox("run", list(runs), key="t_run")  # its status is shown below: labels do not refresh
with st.expander(f"all runs ({len(runs)})"):
    st.dataframe(runs_table(list(runs.values())), hide_index=True)
follow(chosen)
