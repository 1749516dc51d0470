"""Multi-task `pet`: one shared LM, a template and verbalizer per task (`joint: true`).

Each task is its own single-task `pet` strategy (its merged `prompt:` gives its template and label
words; `tunelab.methods.pet` renders, tokenises and checks them); the LM is loaded and changed once
(`pet.train`: full, lora, ...). The label read-out is PET's: logits of each label's words at the
answer position. Over the union label space (`task_heads.TaskLabels`, task i owning its rows) each
feature carries the first tokens of its own task's words in its rows and a placeholder (token 0) in
the other tasks' rows, whose logits are masked out before the loss and prediction:

    word_ids (B, W_total) → per-label logits (B, L_total) → masked by task_ids → cross-entropy

so a task's loss reaches only its own label words; everything in the LM is shared.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tunelab.config import ExperimentConfig, validate_settings
from tunelab.errors import ConfigError
from tunelab.methods.pet_model import PetCollator, PetModel
from tunelab.training.multitask import TASKS_DIR
from tunelab.training.task_heads import union_labels
from tunelab.training.task_sampling import mixture, task_probabilities


def check_prompts(config: ExperimentConfig) -> None:
    """Every task needs a template, its entry's or the experiment's `prompt:` (without one, pet would read
    the bare text and the tasks could not tell each other apart)."""
    shared = (config.prompt or {}).get("template")
    for index, entry in enumerate(config.tasks):
        if not ((entry.prompt or {}).get("template") or shared):
            raise ConfigError(
                f"{config.locate('tasks', index)}: task '{entry.name}' has no prompt template; multi-task pet reads "
                f"each task through a template and label words: add `prompt: {{template: ..., verbalizer: "
                f"{{label: word}}}}` to tasks.{index} (or a template to the experiment's `prompt:`)")


class MaskedPet(torch.nn.Module):
    """PetModel over the union label space; other tasks' label logits masked per example."""

    def __init__(self, pet: PetModel, task_labels):
        super().__init__()
        self.pet, self.task_labels = pet, task_labels
        self.register_buffer("task_masks", task_labels.masks(), persistent=False)  # (T, L_total)

    def forward(self, input_ids, attention_mask, answer_pos, word_ids, task_ids, labels=None):
        logits = self.pet(input_ids, attention_mask, answer_pos, word_ids)["logits"]  # (B, L_total)
        logits = logits.masked_fill(~self.task_masks[task_ids], torch.finfo(logits.dtype).min)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = torch.nn.functional.cross_entropy(logits, labels)
        return out


class TaskPetCollator(PetCollator):
    def __call__(self, features: list[dict]) -> dict:
        batch = super().__call__(features)
        batch["task_ids"] = torch.tensor([f["task_ids"] for f in features])
        return batch


class JointPetStrategy:
    def __init__(self, config: ExperimentConfig, runs, info):
        settings = validate_settings(info.cls.Settings, config.strategy.options(), ("strategy",), config.source,
                                     config.lines)
        self.config, self.runs = config, runs
        self.pets = [info.cls(settings, run.experiment, run.experiment.task.label_names) for run in runs]
        self.task_labels = union_labels(runs)

    def preview(self, splits, n: int) -> list[str]:
        """`tunelab prompt`: the first n test prompts of every task, as the LM reads them."""
        return [f"[task {run.name}]\n{block}" for pet, run in zip(self.pets, self.runs) for block in pet.preview(run.splits, n)]

    def encode(self, index: int, plans, examples: list[dict], split: str) -> list[dict]:
        """One task's PET features, label words placed in its own rows of the union (token 0 elsewhere)."""
        sizes = [sum(len(plan.verbalizer[label]) for label in plan.labels) for plan in plans]
        before, after = sum(sizes[:index]), sum(sizes[index + 1 :])
        offset = self.task_labels.offsets[index]
        features = self.pets[index].encode(plans[index], examples, split)
        for feature in features:
            feature["word_ids"] = [0] * before + list(feature["word_ids"]) + [0] * after
            feature["task_ids"] = index
            if "labels" in feature:
                feature["labels"] += offset
        return features

    def fit(self, splits, run_dir: Path):
        from transformers import set_seed

        from tunelab.costs import parameter_costs
        from tunelab.methods.classifier import train_costs
        from tunelab.train import train_model
        from tunelab.training.multitask_fit import score_by_rows

        exp, first = self.config, self.pets[0]
        plans = [pet.plan() for pet in self.pets]
        train = [self.encode(i, plans, run.splits.train, "train") for i, run in enumerate(self.runs)]
        dev = [f for i, run in enumerate(self.runs) for f in self.encode(i, plans, run.splits.dev, "dev")]
        for i, run in enumerate(self.runs):
            self.encode(i, plans, run.splits.test, "test")  # fail on test-prompt problems before training
        set_seed(exp.train.seed)
        loaded = first.load_base()
        words = [len(plan.verbalizer[label]) for plan in plans for label in plan.labels]
        model = MaskedPet(PetModel(first.prepare(loaded), causal=first.causal, words_per_label=words,
                                   aggregation=first.settings.aggregation), self.task_labels)
        costs = parameter_costs(model)
        sizes = [len(features) for features in train]
        order = mixture(sizes, task_probabilities(sizes, exp.multitask.sampling, exp.multitask.temperature), sum(sizes),
                        exp.train.seed)
        stats = train_model(model, first.engine.tokenizer, [train[t][i] for t, i in order], dev, exp.train, run_dir,
                            score_dev=lambda logits, ids: score_by_rows(self.runs, self.task_labels, logits, ids),
                            metric_for_best=exp.train.metric_for_best or exp.metrics[0],
                            collator=TaskPetCollator(first.engine.tokenizer.pad_token_id or 0))
        costs.update(train_costs(stats, model))
        return JointPetPredictor(self, model, loaded, plans), costs


class JointPetPredictor:
    def __init__(self, strategy: JointPetStrategy, model: MaskedPet, loaded, plans):
        self.strategy, self.model, self.loaded, self.plans = strategy, model, loaded, plans

    def predict(self, examples: list[dict]) -> list[dict]:
        from tunelab.training.multitask_fit import by_task

        outputs = [None] * len(examples)
        for index, positions in enumerate(by_task(examples, len(self.plans))):
            if positions:
                answers = self.predict_task(index, [examples[p] for p in positions])
                for position, answer in zip(positions, answers):
                    outputs[position] = dict(answer, task=self.strategy.runs[index].name)
        return outputs

    def predict_task(self, index: int, examples: list[dict]) -> list[dict]:
        from tunelab.batching import by_length

        s, rows, names = self.strategy, self.strategy.task_labels.rows(index), self.plans[index].labels
        features = s.encode(index, self.plans, [dict(e, label=None) for e in examples], "prediction")
        collate = TaskPetCollator(s.pets[0].engine.tokenizer.pad_token_id or 0)
        device = next(self.model.parameters()).device

        def run(chunk: list[dict]) -> list[dict]:
            batch = {k: v.to(device) for k, v in collate(chunk).items()}
            probs = self.model(**batch)["logits"].float()[:, rows.start : rows.stop].softmax(-1)  # (B, L_task)
            return [{"prediction": names[int(row.argmax())], "scores": dict(zip(names, row.tolist()))} for row in probs]

        self.model.eval()
        with torch.inference_mode():
            return by_length(features, lambda f: len(f["input_ids"]), s.config.train.eval_batch_size, run)

    def save(self, directory: Path) -> None:
        from tunelab.prompts.plan import save_plan
        from tunelab.training.multitask import write_heads

        for run, plan in zip(self.strategy.runs, self.plans):  # each task's template and words
            (Path(directory) / TASKS_DIR / run.name).mkdir(parents=True, exist_ok=True)
            save_plan(plan, Path(directory) / TASKS_DIR / run.name)
        self.strategy.pets[0].change.save(self.model.pet.lm, directory, self.loaded)
        write_heads(directory, self.strategy.task_labels, "per_task")
