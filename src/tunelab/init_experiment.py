"""`tunelab init DATA [--test FILE]`: a ready experiment file for a user's own data (classification and sentence
pairs here; named entities and extractive QA in init_tasks; text to generate in init_generation).

The file's fields and labels come from the data (data.fields), its lengths from the data's token
counts (data.check), and its sweep covers every strategy family at a size a laptop CPU finishes:
the head-based strategies on the embedded encoder `minilm-l6`, the prompting ones on the embedded
LM `smollm2-135m` (the same models and settings as examples/demo.yaml). The file is checked as
`tunelab compare --dry-run` would check it (config, strategy settings, sweep plan) before it is
put in place, so a file that `init` writes runs with no edits.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from tunelab.data.check import DataCheck, check_data, percentile, read_collecting, require_files
from tunelab.data.sampling import held_out_count
from tunelab.errors import ConfigError, DataError
from tunelab.init_cot import cot_lines, cot_note, rationale_field
from tunelab.init_words import LabelWords, label_words

K_SHOT = 16  # LM-BFF's K: examples per class for training and again for dev
SEEDS = [1, 2]
MEMORY_FOR_TWO_GB = 12  # two SmolLM2-135M pet cells peak near 8 GB together, with room for the rest
MAX_TEST = 200  # a laptop-sized test sample: about ±7 points at 95% for accuracy near 50-80%
FEW_SHOT_K = 4
LM_TOKEN_FACTOR = 1.5  # SmolLM2's BPE splits text into up to ~1.5x the tokens MiniLM's WordPiece does
PROMPT_OVERHEAD = 32  # template words and the answer word, in tokens
GENERIC_STEMS = {"train", "training", "test", "dev", "validation", "data", "dataset", "all", "full"}
TEST_FRACTION = 0.2  # without --test: this share of DATA (per class) is held out once as the test split
NO_TEST_NOTE = (f"no --test: {TEST_FRACTION:.0%} of DATA (per class where it has classes) is held out as the test split "
                f"(data.test_fraction), the same examples for every seed; no K-shot example is ever a test example. "
                f"Pass --test FILE to score on a file of your own")


@dataclass
class Written:
    path: Path
    cells: int
    notes: list[str]


def init_experiment(data: str, test: str | None, out: Path, force: bool = False, text_field: str | None = None,
                    label_field: str | None = None, text_pair_field: str | None = None) -> Written:
    """Detect, write `out` (atomically) and return what was detected; UserError (exit 2), nothing written, on bad input."""
    out = Path(out)
    if out.exists() and not force:
        raise ConfigError(f"{out} already exists; pass --force to overwrite it, or --out another file")
    if out.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(f"--out {out}: an experiment file ends in .yaml or .yml")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; name a file, e.g. {out / 'experiment.yaml'}")
    require_files(data, test)
    train_read = read_collecting(data)  # records and bad lines, read once for either kind of data
    options = {"--text-field": text_field, "--label-field": label_field, "--text-pair-field": text_pair_field}
    for other_kind in (init_shaped, init_multiple_choice, init_generation):  # each recognises its own data, or None
        written = other_kind(data, test, out, train_read, options)
        if written is not None:
            return written
    report = check_data(data, test, text_field, label_field, text_pair_field=text_pair_field, train_read=train_read)
    if not report.usable:
        raise unusable(report.problems, f"run `tunelab data check {data}{' --test ' + test if test else ''}` for the full list")
    k = k_shot(report, test)
    words = None if report.fields.integer_labels else label_words(report.fields.label_names)
    worked = None if words is None else rationale_field(train_read[0])
    cells = write_checked(experiment_text(report, data, test, out, k, words, worked), out)
    notes = list(report.fields.notes) + [f"K = {k} examples per class (train) and {k} (dev), seeds {SEEDS}"]
    if words is not None and words.note:
        notes.append(words.note)
    if worked:
        notes.append(cot_note(worked))
    notes += test_notes(data, test, report)
    if report.fields.integer_labels:
        notes.append("integer labels carry no words a prompt could score: the prompting strategies are left out; "
                     "write label names into task.label_names and prompt.verbalizer to add them")
    return Written(out, cells, notes)


def test_notes(data: str, test: str | None, report: DataCheck | None = None) -> list[str]:
    """What to know about the test split: held out of DATA, DATA itself, or a file that repeats DATA's texts
    (checked for classification data, whose check compares them)."""
    if not test:
        return [NO_TEST_NOTE]
    if not test.startswith("hf:") and Path(test).resolve() == Path(data).resolve():
        return [f"--test is DATA itself: any test example may be drawn into a seed's K-shot train or dev split, so "
                f"the test scores are optimistic; leave --test out to hold {TEST_FRACTION:.0%} of DATA out instead "
                f"(data.test_fraction)"]
    if report is not None and report.overlap:
        return [f"{len(report.overlap)} of the {report.splits[1].count} test texts are also in DATA: a seed may train or "
                f"choose on them, so their scores are optimistic; `tunelab data check {data} --test {test}` lists them"]
    return []


def unusable(problems: list[str], hint: str) -> DataError:
    shown = "\n  ".join(problems[:5])
    return DataError(f"the data has {len(problems)} problem(s); nothing written:\n  {shown}" + (f"\n{hint}" if hint else ""))


def init_shaped(data: str, test: str | None, out: Path, train_read: tuple[list[dict], list[str]],
                options: dict) -> Written | None:
    """Named-entity or extractive-QA data (init_tasks): its experiment written, else None (classification)."""
    from tunelab.init_tasks import checked_counts, detect_shape, sizes

    records, problems = train_read
    shape = detect_shape(records)
    if shape is None:
        return None
    given = [option for option, value in options.items() if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: field options name classification fields; {data} holds "
                          f"{shape.description}, read by those names (leave the option out)")
    test_records = read_test(test, problems)  # lines that are no records: every one listed, as for classification data
    train_count, test_count = checked_counts(shape, records, test_records)
    k, dev_k = sizes(shape, train_count if test else train_count - test_count)  # K from what a held-out split leaves
    cells = write_checked(shaped_text(shape, data, test, out, (k, dev_k), (train_count, test_count)), out)
    notes = [shape.description, f"K = {k} {shape.unit} (train) and {dev_k} (dev), seeds {SEEDS}"]
    return Written(out, cells, notes + test_notes(data, test))


def init_multiple_choice(data: str, test: str | None, out: Path, train_read: tuple[list[dict], list[str]],
                         options: dict) -> Written | None:
    """Multiple-choice questions (init_choices): their experiment written, else None."""
    from tunelab import init_choices as mc

    records, problems = train_read
    if not mc.is_multiple_choice(records):
        return None
    refuse_options(options, ("--label-field", "--text-pair-field"), f"{data} holds multiple-choice questions (the "
                   f"answer in `label`, one of the record's `choices`)")
    test_records = read_test(test, problems)
    text, how = mc.text_field_of(records, data, options["--text-field"])
    train, test_examples = mc.checked(text, records, test_records)
    sizes = mc.measure(train, test_examples)
    detected = f"multiple-choice questions in {text!r}, each with its own `choices`"
    cells = write_framed((data, test, out), (detected, len(train), "questions"), sizes, len(test_examples),
                         mc.body_lines(text, sizes, len(test_examples)),
                         (mc.entry_lines(sizes), "the strategies that read multiple choice: prompting, and training that read-out"))
    notes = [f"{detected}; text field: {text!r} ({how})", *mc.notes(sizes, SEEDS)]
    return Written(out, cells, notes + test_notes(data, test))


def init_generation(data: str, test: str | None, out: Path, train_read: tuple[list[dict], list[str]],
                    options: dict) -> Written | None:
    """Text-to-text data (init_generation): its experiment written, else None (classification)."""
    from tunelab import init_generation as gen

    records, problems = train_read
    fields = gen.generation_fields(records, data, options["--text-field"], options["--label-field"])
    if fields is None:
        return None
    refuse_options(options, ("--text-pair-field",), f"{data} holds text to generate from one text field")
    test_records = read_test(test, problems)
    train, test_examples = gen.checked(fields, records, test_records)
    sizes = gen.measure(train, test_examples)
    detected = f"text to generate, {fields.text!r} → {fields.target!r}"
    cells = write_framed((data, test, out), (detected, len(train), "examples"), sizes, len(test_examples),
                         gen.body_lines(fields, sizes, train, len(test_examples)),
                         (gen.entry_lines(sizes), "prompting and fine-tuning; `tunelab strategies` lists the others"))
    return Written(out, cells, list(fields.notes) + gen.size_notes(sizes, SEEDS) + test_notes(data, test))


def refuse_options(options: dict, refused: tuple[str, ...], what: str) -> None:
    given = [option for option in refused if options[option] is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: {what}; leave the option out")


def read_test(test: str | None, train_problems: list[str]) -> list[dict] | None:
    """The test file's records; every line of either file that is no record listed at once (exit 2)."""
    test_records, test_problems = read_collecting(test) if test else (None, [])
    if train_problems or test_problems:
        raise unusable(train_problems + test_problems, "")
    return test_records


def write_framed(paths: tuple, detected: tuple[str, int, str], sizes, test_count: int, body: tuple[list, list, list],
                 entries: tuple[list[str], str]) -> int:
    """Write (checked) a file in the classification file's frame; the cell count. `paths`: (data, test, out);
    `detected`: (what the data holds, training examples, what K counts); `sizes`: k, dev_k, max_test;
    `body`: (model and task, data sizes, the rest) lines; `entries`: (the sweep's entry lines, a note on them)."""
    data, test, out = paths
    what, train_count, unit = detected
    head, size, rest = body
    sized = (f"K={sizes.k} {unit} ({sizes.dev_k} for dev), {len(SEEDS)} seeds, {min(sizes.max_test, test_count)} "
             f"test {unit}")
    lines = [*header_lines(data, test, out, what, train_count, sized, more_k=f"[{sizes.k}, {2 * sizes.k}]"),
             *head, *data_lines(data, test, out), *size, *rest, *sweep_lines(sizes.k, entries[1]), *entries[0]]
    return write_checked("\n".join(lines) + "\n", out)


def write_checked(text: str, out: Path) -> int:
    """Check the file as `compare` would, then put it in place atomically; the cell count."""
    cells = check_written(text, out)
    staging = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, out)  # a reader (or a crash) sees no half-written file
    return cells


def class_counts(report: DataCheck, test: str | None) -> dict[str, int]:
    """Each label's training examples: what the held-out test split leaves of DATA when there is no test file."""
    counts = {name: report.splits[0].labels[name] for name in report.fields.label_names}
    return counts if test else {name: n - held_out_count(n, TEST_FRACTION) for name, n in counts.items()}


def k_shot(report: DataCheck, test: str | None) -> int:
    """K for train and the same K for dev, both drawn from the training examples: the smallest class needs 2K."""
    counts = class_counts(report, test)
    rare = min(counts, key=counts.get)
    k = min(K_SHOT, counts[rare] // 2)
    if k < 1:
        held = "" if test else f" once {TEST_FRACTION:.0%} of each label is held out as the test split (no --test)"
        raise DataError(f"label {rare!r} has {counts[rare]} valid training example(s){held}; K-shot training needs at "
                        f"least 2 per label (one for train, one for dev); add examples, pass --test FILE, or remove the label")
    return k


def experiment_name(data: str) -> str:
    path = Path(data)
    stem = path.parent.name if path.stem.lower() in GENERIC_STEMS and path.parent.name else path.stem
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "experiment"
    return name


def relative(path: str, out: Path) -> str:
    """`path` as the experiment file will read it: relative to the file's folder (config.resolve_relative_paths);
    a `datasets` split (hf:...) as given."""
    if path.startswith("hf:"):
        return path
    return os.path.relpath(Path(path).resolve(), out.resolve().parent)


def lengths(report: DataCheck) -> tuple[int, int]:
    """(encoder max_length, LM max_length): the encoder truncates the longest 1%; a prompt must fit whole."""
    every = [n for split in report.splits for n in split.lengths] or [128]
    encoder = min(512, max(32, round_up(percentile(every, 99), 16)))
    lm = max(128, round_up(int(max(every) * LM_TOKEN_FACTOR) + PROMPT_OVERHEAD, 64))
    return encoder, lm


def machine_workers() -> tuple[int, str]:
    """(cells at once, why) for this machine: two where it has the cores and memory for two SmolLM2 pet cells
    (about 4 GB each); two cells with one thread each beat one with two (README: Several cells at once)."""
    from tunelab.sweep.local_executor import machine_cores

    cores = machine_cores()
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (AttributeError, OSError, ValueError):  # a platform without these: assume the small case
        memory_gb = 0.0
    workers = 2 if cores >= 2 and memory_gb >= MEMORY_FOR_TWO_GB else 1
    return workers, f"this machine: {cores} cores, {memory_gb:.0f} GB"


def round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def q(value) -> str:
    """A YAML scalar for any string (JSON strings are YAML flow scalars)."""
    return json.dumps(value, ensure_ascii=False)


def header_lines(data: str, test: str | None, out: Path, detected: str, train_count: int, sized: str,
                 more_k: str = "[16, 64]") -> list[str]:
    return [
        f"# Written by `tunelab init` on {date.today().isoformat()} from {Path(data).name}"
        + (f" (test: {Path(test).name})" if test else "") + ".",
        f"# Detected: {detected};",
        f"# {train_count} training examples. Run:  tunelab compare {out.name}",
        f"# (the report lands in runs/{experiment_name(data)}/report.html under the folder you run it from; output_dir moves it)",
        "#",
        f"# Sized for a laptop CPU: {sized}, small models.",
        "# To scale up: more seeds (sweep.seeds: [1, 2, 3, 4, 5]), the whole test file (remove data.max_test),",
        f"# more K values (sweep.k_shot: {more_k}), a larger model (model.name: a local folder or hub id), a GPU.",
        f"name: {q(experiment_name(data))}",
    ]


def data_lines(data: str, test: str | None, out: Path) -> list[str]:
    if test:
        return ["data:", f"  train: {q(relative(data, out))}   # K-shot train and dev are drawn from it per seed",
                f"  test: {q(relative(test, out))}"]
    return ["data:", f"  train: {q(relative(data, out))}   # K-shot train and dev are drawn from what the test split leaves",
            f"  test_fraction: {TEST_FRACTION}     # no test file: this share of train, held out once (per class where there are classes), is the test split"]


def sweep_lines(k: int, entries_note: str = "one entry per family; `tunelab strategies` lists the others") -> list[str]:
    workers, machine = machine_workers()
    return [
        "sweep:",
        f"  k_shot: [{k}]",
        f"  seeds: [{', '.join(map(str, SEEDS))}]",
        f"  workers: {workers}             # cells at once, sized to {machine} (README: Several cells at once)",
        "  save_artifacts: false   # results only; true keeps each cell's weights for `tunelab evaluate`/`predict`",
        f"  strategies:             # {entries_note}",
    ]


def shaped_text(shape, data: str, test: str | None, out: Path, k_and_dev: tuple[int, int], counts: tuple[int, int]) -> str:
    """The experiment file for named-entity or extractive-QA data (init_tasks), with the classification file's frame."""
    from tunelab.init_tasks import entry_lines, model_task_lines, size_lines, test_size, train_metric_lines

    (k, dev_k), (train_count, test_count) = k_and_dev, counts
    lines = [
        *header_lines(data, test, out, shape.description, train_count,
                      f"K={k} {shape.unit} ({dev_k} for dev), {len(SEEDS)} seeds, {test_size(shape, test_count)} test examples",
                      more_k=f"[{k}, {4 * k}]"),
        *model_task_lines(shape),
        *data_lines(data, test, out),
        *size_lines(shape, k, dev_k, test_count),
        *train_metric_lines(shape),
        *sweep_lines(k),
        *entry_lines(shape),
    ]
    return "\n".join(lines) + "\n"


def detected_texts(fields) -> str:
    if fields.text_pair:
        return f"sentence pairs in {fields.text!r} and {fields.text_pair!r}"
    return f"text field {fields.text!r}"


def template_text(fields, question: str) -> str:
    """A generic prompt: the text (both texts of a pair, each on its line), then the question of the labels."""
    texts = "{{ text }}\n{{ text_pair }}" if fields.text_pair else "{{ text }}"
    return f"{texts}\nQuestion: {question}?\nAnswer:"


def experiment_text(report: DataCheck, data: str, test: str | None, out: Path, k: int, chosen: LabelWords | None,
                    rationale: str | None = None) -> str:
    """The classification file; `rationale`: a field of worked reasoning, for a commented `cot` entry."""
    fields, train = report.fields, report.splits[0]
    encoder_length, lm_length = lengths(report)
    names = fields.label_names
    test_count = report.splits[1].count if test else sum(
        held_out_count(train.labels[name], TEST_FRACTION) for name in names)
    max_test = f"  max_test: {MAX_TEST}          # a random {MAX_TEST} of the test split (seeded: the same for every cell)\n" \
               f"  max_test_seed: 0\n" if test_count > MAX_TEST else ""
    words = chosen.words if chosen is not None else {}
    question = " or ".join(words.values())
    lines = [
        *header_lines(data, test, out, f"{detected_texts(fields)}, label field {fields.label!r}, labels {', '.join(names)}",
                      train.count, f"K={k} per class, {len(SEEDS)} seeds, {min(MAX_TEST, test_count)} test examples"),
        "model:",
        "  name: minilm-l6        # the embedded encoder (22.7M) for the head-based strategies; see `tunelab models`",
        f"  max_length: {encoder_length}        # the 99th percentile of the data's token counts, rounded up",
        "  pooling: mean          # MiniLM was trained for mean pooling (README: Embedded models)",
        "task:",
        f"  type: {'pair_classification' if fields.text_pair else 'classification'}",
        f"  text_field: {q(fields.text)}",
        *([f"  text_pair_field: {q(fields.text_pair)}   # the second text; templates read it as {{{{ text_pair }}}}"]
          if fields.text_pair else []),
        f"  label_field: {q(fields.label)}",
        f"  label_names: [{', '.join(q(n) for n in names)}]" + ("   # integer labels index this list" if fields.integer_labels else ""),
        *data_lines(data, test, out),
        f"  k_shot: {k}",
        max_test + "  perturbed_test: false   # true: also score a typo/word-swap copy of the test split (doubles evaluation)",
        "train:",
        "  epochs: 10",
        "  batch_size: 8",
        "  early_stopping_patience: 4",
        "  log_to: [csv]          # also: tensorboard, mlflow, wandb (pip install 'tunelab[tracking]')",
        "metrics: [accuracy, f1]",
    ]
    if not fields.integer_labels:
        lines += [
            "prompt:                  # for the prompting strategies: a Jinja template and a word per label",
            f"  template: {q(template_text(fields, question))}",
            f"  verbalizer: {{{', '.join(f'{q(n)}: {q(w)}' for n, w in words.items())}}}",
            "  use_chat_template: false",
        ]
    lines += [
        *sweep_lines(k),
        "    - {name: head, train: {learning_rate: 3.0e-3}}     # fine-tuning: a linear probe on the frozen encoder",
        "    - {name: full, train: {learning_rate: 1.0e-4}}     # fine-tuning: every weight",
        "    - {name: bitfit, train: {learning_rate: 3.0e-3}}   # fine-tuning: biases only",
        "    - {name: lora, settings: {r: 8}, train: {learning_rate: 3.0e-3}}   # parameter-efficient",
    ]
    if not fields.integer_labels:
        lines += [
            f"    - {{name: zero_shot, model: {{name: smollm2-135m, max_length: {lm_length}}}}}   # prompting: the LM scores the label words",
            f"    - {{name: few_shot, settings: {{k: {FEW_SHOT_K}}}, model: {{name: smollm2-135m, max_length: {max(512, lm_length)}}}}}",
        ]
    if chosen is not None:
        lines += [pet_entry(chosen.pet_ok, lm_length)]
    if chosen is not None and rationale:
        lines += cot_lines(rationale)
    return "\n".join(lines) + "\n"


def pet_entry(first_tokens_differ: bool, lm_length: int) -> str:
    """Prompt-based fine-tuning: `pet` (each word's first token scored), or `pet_choices` (every token) where the
    label words start with the same token, which pet could not tell apart."""
    name, why = ("pet", "prompt-based fine-tuning") if first_tokens_differ else (
        "pet_choices", "prompt-based fine-tuning, every token of each label word scored (they start alike)")
    return (f"    - {{name: {name}, model: {{name: smollm2-135m, max_length: {lm_length}}}, "
            f"train: {{learning_rate: 2.0e-5, epochs: 4}}}}   # {why}")


def check_written(text: str, out: Path) -> int:
    """Validate the text as the file it will be (paths resolved from out's folder); returns the cell count.
    A folder made for `out` is removed again if the check fails: bad input leaves nothing behind."""
    from tunelab.config import load_experiment
    from tunelab.sweep.runner import checked_plan

    made = not out.parent.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    probe = out.parent / f".{out.stem}.{os.getpid()}.check.yaml"
    try:
        probe.write_text(text, encoding="utf-8")
        unstarted = out.parent / f".{out.stem}.{os.getpid()}.no-sweep"  # never made: no finished cell to compare with
        with warnings.catch_warnings():  # the data's warnings (duplicates, overlap) are the notes' and the run's to give
            warnings.simplefilter("ignore")
            return len(checked_plan(load_experiment(probe), unstarted)[1])
    except BaseException:
        if made:
            probe.unlink(missing_ok=True)
            out.parent.rmdir()
        raise
    finally:
        probe.unlink(missing_ok=True)
