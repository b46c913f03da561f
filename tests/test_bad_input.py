"""Every bad input: non-zero exit, one line on stderr naming the problem and the fix, no traceback,
and nothing written anywhere: the run directories, any export and the cache folder (no event file, no
lock file, no cache entry for a refused corpus) left as they were. One table, the real scripts."""

import concurrent.futures
import hashlib
import os
import shutil

import pytest

from helpers import QUOTE, run_command, script_command, script_env, smoke_train_command, snapshot


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A trained run, its export, and corpora good and bad."""
    root = tmp_path_factory.mktemp("bad_input")
    files = {
        "good": (QUOTE + "\n") * 30,
        "other_vocab": "xyz xyz\n" * 400,
        "empty": "",
        "short": "abc",
    }
    for name, text in files.items():
        (root / f"{name}.txt").write_text(text, encoding="utf-8")
    (root / "latin1.txt").write_bytes("Café au lait\n".encode("utf-8") * 5 + "crème".encode("latin-1"))
    env = script_env(root / "cache")
    for run, extra in (("run", []), ("other_run", [f"--data_path={root / 'other_vocab.txt'}"])):
        trained = run_command(
            smoke_train_command(root / run, root / "good.txt", "--max_steps=4", *extra), env, timeout=300
        )
        assert trained.returncode == 0, trained.stderr
    exported = run_command(script_command("export.py", f"--train_dir={root / 'run'}"), env, timeout=300)
    assert exported.returncode == 0, exported.stderr
    (root / "empty_folder").mkdir()
    (root / "binary_folder").mkdir()
    (root / "binary_folder" / "data.bin").write_bytes(b"\x00\x01\x02")
    (root / "no_checkpoints").mkdir()
    for name in ("config.json", "vocab.json"):
        (root / "no_checkpoints" / name).write_bytes((root / "run" / name).read_bytes())
    # The corpus edited after training, keeping its vocabulary.
    (root / "edited.txt").write_text((QUOTE + "\n") * 29, encoding="utf-8")
    _copy_run_and_break(root, "garbled_config", "config.json", b'{"model": {"rnn_units": 6')
    _copy_run_and_break(root, "wrong_config", "config.json", b'{"model": {"rnn_units": "many"}}')
    _copy_run_and_break(root, "no_config", "config.json", None)
    _copy_run_and_break(root, "no_vocab", "vocab.json", None)
    _copy_run_and_break(root, "garbled_vocab", "vocab.json", b'{"chars": ["a", "a"]}')
    _copy_run_and_break(root, "no_checkpoint_list", "checkpoints/checkpoint", None)
    _copy_run_and_break(root, "garbled_checkpoint_list", "checkpoints/checkpoint", b"garbage {\xff")
    gone = _copy_run_and_break(root, "gone_checkpoints", "checkpoints/checkpoint", None, keep=True)
    for path in (gone / "checkpoints").glob("ckpt-*"):
        path.unlink()
    data_gone = _copy_run_and_break(root, "data_gone", "checkpoints/checkpoint", None, keep=True)
    for path in (data_gone / "checkpoints").glob("ckpt-*.data-*"):
        path.unlink()  # the indexes remain: the run is refused only once the trainer tries to restore
    return root, env


def _copy_run_and_break(root, name, relative_path, content, keep=False):
    """A copy of the trained run as root/name with one file replaced by `content` (None: deleted)."""
    copy = root / name
    shutil.copytree(root / "run", copy)
    if not keep:
        if content is None:
            (copy / relative_path).unlink()
        else:
            (copy / relative_path).write_bytes(content)
    return copy


# (script, arguments with {root} for the world's folder, the start of the one line on stderr)
CASES = [
    ("train", ["--data_path={root}/missing.txt"], "error: --data_path {root}/missing.txt does not exist"),
    (
        "train",
        ["--data_path={root}/empty_folder"],
        "error: --data_path {root}/empty_folder holds no UTF-8 text",
    ),
    (
        "train",
        ["--data_path={root}/binary_folder"],
        "error: --data_path {root}/binary_folder holds no UTF-8 text (1 skipped as binary or not UTF-8: ",
    ),
    ("train", ["--data_path={root}/*.nothing"], "error: --data_path {root}/*.nothing matches no files"),
    (
        "train",
        ["--data_path={root}/good.txt,{root}/missing.txt"],
        "error: --data_path {root}/missing.txt does not exist",
    ),
    ("train", ["--document_separator=\\q"], "error: --document_separator has an unknown escape \\q"),
    ("train", ["--data_path={root}/empty.txt"], "error: --data_path {root}/empty.txt is empty"),
    (
        "train",
        ["--data_path={root}/latin1.txt"],
        "error: --data_path {root}/latin1.txt is not valid UTF-8 at byte 72 (line 6",
    ),
    (
        "train",
        ["--data_path={root}/short.txt"],
        "error: the training split has 2 characters, fewer than one batch",
    ),
    ("train", ["--val_fraction=0.02"], "error: the validation split has 44 characters"),
    ("train", ["--batch_size=0"], "error: --batch_size must be an integer >= 1, got 0"),
    ("train", ["--seq_length=0"], "error: --seq_length must be an integer >= 1, got 0"),
    ("train", ["--rnn_units=0"], "error: --rnn_units must be an integer >= 1, got 0"),
    ("train", ["--num_layers=0"], "error: --num_layers must be an integer >= 1, got 0"),
    ("train", ["--embedding_dim=-1"], "error: --embedding_dim must be an integer >= 1, got -1"),
    ("train", ["--dropout=1"], "error: --dropout must be in [0, 1), got 1.0"),
    ("train", ["--val_fraction=1"], "error: --val_fraction must be in [0, 1), got 1.0"),
    ("train", ["--learning_rate=0"], "error: --learning_rate must be > 0, got 0.0"),
    ("train", ["--grad_clip=-1"], "error: --grad_clip must be > 0, got -1.0"),
    ("train", ["--patience=-1"], "error: --patience must be an integer >= 0, got -1"),
    ("train", ["--cell=transformer"], "error: --cell must be one of lstm, gru, rnn, got 'transformer'"),
    ("train", ["--flagfile={root}/missing.cfg"], "error: Unable to open flagfile"),
    ("train", ["--rnn_size=128"], "error: Unknown command line flag 'rnn_size'"),
    (
        "train",
        ["--train_dir={root}/run", "--rnn_units=32"],
        "error: {root}/run holds a run with another config (rnn_units 64 -> 32)",
    ),
    (
        "train",
        ["--train_dir={root}/run", "--data_path={root}/other_vocab.txt"],
        "error: the corpus vocabulary (5 characters) differs",
    ),
    (
        "train",
        ["--train_dir={root}/new", "--init_from={root}/other_run", "--rnn_units=32"],
        "error: --init_from {root}/other_run has another model shape (rnn_units 64 there, 32 here)",
    ),
    (
        "train",
        ["--train_dir={root}/new", "--init_from={root}/run", "--cell=gru"],
        "error: --init_from {root}/run has another model shape (cell 'lstm' there, 'gru' here)",
    ),
    (
        "train",
        ["--train_dir={root}/new", "--init_from={root}/run", "--skip_connections"],
        "error: --init_from {root}/run has another model shape (skip_connections False there, True here)",
    ),
    ("train", ["--train_dir={root}/new", "--init_from={root}/nothing"], "error: {root}/nothing holds no run"),
    (
        "train",
        ["--strategy=horovod"],
        "error: --strategy must be one of auto, default, mirrored, multi_worker, tpu, got 'horovod'",
    ),
    (
        "train",
        ["--mixed_precision=float8"],
        "error: --mixed_precision must be one of none, bfloat16, float16, got 'float8'",
    ),
    ("train", ["--strategy=multi_worker"], "error: --strategy=multi_worker needs TF_CONFIG"),
    ("train", ["--strategy=tpu"], "error: --strategy=tpu found no TPU"),
    (
        "train",
        ["--train_dir={root}/run", "--mixed_precision=float16"],
        "error: {root}/run holds a run with another config (mixed_precision 'none' -> 'float16')",
    ),
    ("sample", ["--train_dir={root}/run", "--temperature=0"], "error: --temperature must be > 0, got 0.0"),
    ("sample", ["--train_dir={root}/run", "--top_k=-1"], "error: --top_k must be >= 0, got -1"),
    ("sample", ["--train_dir={root}/run", "--top_p=0"], "error: --top_p must be in (0, 1], got 0.0"),
    ("sample", ["--train_dir={root}/run", "--top_p=1.5"], "error: --top_p must be in (0, 1], got 1.5"),
    ("sample", ["--train_dir={root}/run", "--length=-1"], "error: --length must be >= 0, got -1"),
    (
        "sample",
        ["--train_dir={root}/run", "--num_samples=0"],
        "error: --num_samples must be an integer >= 1, got 0",
    ),
    (
        "sample",
        ["--train_dir={root}/run", "--prime=Zebra€"],
        "error: --prime has characters outside the run's vocabulary: ['Z', 'b', 'r', '€']",
    ),
    (
        "sample",
        ["--train_dir={root}/run", "--sampling=beam"],
        "error: --sampling must be one of sample, greedy, sample_at_space",
    ),
    (
        "sample",
        ["--train_dir={root}/run", "--prime_file={root}/missing.txt"],
        "error: --prime_file {root}/missing.txt does not exist",
    ),
    (
        "sample",
        ["--train_dir={root}/run", "--prime_file={root}/latin1.txt"],
        "error: --prime_file {root}/latin1.txt is not valid UTF-8 at byte 72",
    ),
    (
        "sample",
        ["--train_dir={root}/run", "--prime_file={root}/empty.txt"],
        "error: --prime_file {root}/empty.txt is empty",
    ),
    (
        "sample",
        ["--train_dir={root}/run", "--prime=K", "--prime_file={root}/good.txt"],
        "error: pass --prime or --prime_file, not both",
    ),
    (
        "sample",
        ["--train_dir={root}/run", "--stop_at=Zebra"],
        "error: --stop_at has characters outside the run's vocabulary: ['Z', 'b', 'r']",
    ),
    ("sample", ["--train_dir={root}/run", "--stop_at=a\\"], "error: --stop_at has an unknown escape \\;"),
    (
        "sample",
        ["--train_dir={root}/run", "--output={root}/empty_folder"],
        "error: --output {root}/empty_folder is a folder",
    ),
    ("sample", ["--train_dir={root}/nothing"], "error: {root}/nothing holds no run"),
    ("sample", ["--train_dir={root}/no_checkpoints"], "error: {root}/no_checkpoints holds no checkpoint yet"),
    (
        "sample",
        ["--train_dir={root}/run", "--checkpoint={root}/run/checkpoints/ckpt-999"],
        "error: checkpoint {root}/run/checkpoints/ckpt-999 not found",
    ),
    (
        "export",
        ["--train_dir={root}/run"],
        "error: --export_dir {root}/run/export is not empty; pass --overwrite",
    ),
    ("export", ["--train_dir={root}/no_checkpoints"], "error: {root}/no_checkpoints holds no checkpoint yet"),
    (
        "export",
        ["--train_dir={root}/no_checkpoints", "--format=web", "--export_dir={root}/fresh"],
        "error: {root}/no_checkpoints holds no checkpoint yet",
    ),
    (
        "export",
        ["--train_dir={root}/run", "--format=web", "--export_dir={root}/run"],
        "error: --export_dir {root}/run is not empty; pass --overwrite",
    ),
    (
        "export",
        ["--train_dir={root}/run", "--format=web", "--web_runtime_dir={root}", "--export_dir={root}/fresh"],
        "error: --web_runtime_dir {root} has no @litertjs/core/package.json; run `npm ci` in the",
    ),
    (
        "export",
        ["--train_dir={root}/run", "--web_runtime_dir={root}", "--export_dir={root}/fresh"],
        "error: --web_runtime_dir applies to web exports only; add --format=web",
    ),
    (
        "export",
        ["--train_dir={root}/run", "--format=web", "--quantize=int4"],
        "error: --quantize must be one of auto, none, float16, int8, got 'int4'",
    ),
    ("webpage", ["--export_dir={root}/run"], "error: {root}/run holds no web page; write one with"),
    ("webpage", ["--export_dir={root}/run", "--temperature=0"], "error: --temperature must be > 0, got 0.0"),
    # A run directory touched by hand, or its corpus changed: one line naming the file and what to do
    # (every script reads a run directory through the same checks; one script per fault).
    (
        "train",
        ["--train_dir={root}/run", "--data_path={root}/edited.txt"],
        "error: the corpus has changed since {root}/run was trained on it (sha256 ",
    ),
    (
        "sample",
        ["--train_dir={root}/garbled_config"],
        "error: {root}/garbled_config/config.json is not a valid config",
    ),
    (
        "train",
        ["--train_dir={root}/wrong_config"],
        "error: {root}/wrong_config/config.json is not a valid config",
    ),
    (
        "train",
        ["--train_dir={root}/no_config"],
        "error: {root}/no_config/config.json is missing but {root}/no_config holds a run",
    ),
    (
        "export",
        ["--train_dir={root}/no_vocab", "--export_dir={root}/fresh"],
        "error: {root}/no_vocab/vocab.json is missing; restore it",
    ),
    (
        "sample",
        ["--train_dir={root}/garbled_vocab"],
        "error: {root}/garbled_vocab/vocab.json is not a valid vocabulary",
    ),
    (
        "train",
        ["--train_dir={root}/no_checkpoint_list"],
        "error: {root}/no_checkpoint_list/checkpoints/checkpoint (the list of checkpoints) is missing",
    ),
    (
        "export",
        ["--train_dir={root}/garbled_checkpoint_list", "--export_dir={root}/fresh"],
        "error: {root}/garbled_checkpoint_list/checkpoints/checkpoint (the list of checkpoints) is",
    ),
    (
        "train",
        ["--train_dir={root}/gone_checkpoints"],
        "error: {root}/gone_checkpoints/checkpoints/checkpoint lists checkpoints whose files are gone",
    ),
    (
        "train",
        ["--train_dir={root}/data_gone"],
        "error: no checkpoint in {root}/data_gone/checkpoints is readable; move that folder away",
    ),
]


def _command(root, script, arguments):
    arguments = [argument.format(root=root) for argument in arguments]
    if script == "train":
        return smoke_train_command(f"{root}/fresh", f"{root}/good.txt", *arguments)
    return script_command(f"{script}.py", *arguments)


@pytest.fixture(scope="module")
def outcomes(world):
    """Every case run once against the world, two at a time (each process spends seconds of one core
    starting TensorFlow): (their CompletedProcesses in CASES order, the world's snapshot before, after)."""
    root, env = world
    before = snapshot(root)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(lambda case: run_command(_command(root, case[0], case[1]), env, timeout=300), CASES)
        )
    return results, before, snapshot(root)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{c[0]}:{' '.join(c[1])}" for c in CASES])
def test_bad_input_is_one_line(world, outcomes, index):
    root, _ = world
    result = outcomes[0][index]
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(CASES[index][2].format(root=root)), last_line


@pytest.mark.slow
def test_no_bad_input_changes_anything(world, outcomes):
    root, _ = world
    _, before, after = outcomes
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert not changed, sorted(changed)  # the paths name the case that wrote them
    assert not os.path.exists(root / "fresh") and not os.path.exists(root / "new")
    # The snapshot covers the cache folder: the corpora refused after encoding left no entry there.
    assert "cache/encoded" in before
    for refused in ("short.txt", "edited.txt"):
        digest = hashlib.sha256((root / refused).read_bytes()).hexdigest()
        assert not [path for path in after if digest in path], refused
