"""The PPO / filtered-BC update of the LoRA adapter on the served model itself (accelerate + peft).

The trainable LoRA is added to `SharedPolicy.model` (no second copy of the weights); the reference policy of
the KL term is the same model under `disable_adapter()`. Log-probabilities come from the transformer body's
last hidden states and the (frozen, possibly tied) lm_head weight through the chunked
`token_logprobs_from_hidden`, with the model's own output transform (`rl/output_head.py`: Gemma 2's
soft-capping, Cohere's and Granite's scaling) and each turn's recorded sampling temperature, so that the PPO
ratio starts at 1 up to numerics; the gap is reported as `logprob_mismatch`.

One update: [critic: values -> hierarchical GAE] -> [KL: reference log-probs] -> `epochs` passes over the
rows (shuffled by a generator seeded with (seed, update index), so a resumed run shuffles the same way);
each optimizer step accumulates exactly `gradient_accumulation_steps` micro-batches of `micro_batch_size` rows
(accelerate's `accumulate`), clips the gradient norm and steps the scheduler.

Under several processes (torchrun / accelerate launch) every process holds the same batch (the self-play loop
gathers every process's episodes); each optimizer step takes `micro_batch_size * gradient_accumulation_steps`
rows per process, each process trains its share, and DDP averages the gradients, so the adapters stay equal.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import gather_object
from peft import LoraConfig, PeftModel
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from langgraph_omar.rl.batch import TrainingBatch, assign_critic_advantages, finish_advantages
from langgraph_omar.rl.config import RunConfig
from langgraph_omar.rl.logprobs import token_logprobs_and_entropy_from_hidden
from langgraph_omar.rl.losses import kl_penalty, masked_mean, masked_sum, ppo_clip_loss, value_loss
from langgraph_omar.rl.micro_batches import Step, first_epoch_micro_batches, plan_steps
from langgraph_omar.rl.output_head import model_logit_transform
from langgraph_omar.rl.shared_prefix import shared_prefix_length
from langgraph_omar.rl.value_fit import explained_variance, fit_value_head
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.serving.precision import frozen_weight_casts, mixed_precision
from langgraph_omar.serving.threads import adjust_threads
from langgraph_omar.trajectory import Episode


class PolicyWithValueHead(nn.Module):
    """The served peft model's transformer body (+ an optional Linear(H, 1) value head) as one module, so that
    accelerate/DDP see every trainable parameter in one forward. forward -> (hidden (B, T, H), values (B, T)).

    cast_weights: the autocast type of the update on float32 weights; the body then runs on copies of its
    frozen weights made once in that type (`precision.frozen_weight_casts`), not on casts made every forward."""

    def __init__(
        self, peft_model: PeftModel, value_head: nn.Linear | None, cast_weights: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.peft_model = peft_model
        self.value_head = value_head
        self.cast_weights = cast_weights

    def causal_lm(self) -> Any:
        return self.peft_model.get_base_model()

    def body(self) -> Any:
        causal_lm = self.causal_lm()
        return getattr(causal_lm, str(causal_lm.base_model_prefix))

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, shared_prefix: int = 0
    ) -> tuple[Tensor, Tensor | None]:
        """shared_prefix: P > 0 when every row's first P tokens are the same (rl/shared_prefix.py): they run once
        and their keys and values are repeated for the rows."""
        body = self.body()
        casts = frozen_weight_casts(body, self.cast_weights) if self.cast_weights is not None else {}

        def run(**inputs: Any) -> Any:
            return functional_call(body, casts, (), inputs) if casts else body(**inputs)

        if shared_prefix:
            states = self._forward_shared(run, input_ids, attention_mask, shared_prefix)
        else:
            states = run(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            ).last_hidden_state
        values = None if self.value_head is None else self.value_head(states.to(self.value_head.weight.dtype))
        return states, None if values is None else values.squeeze(-1)

    @staticmethod
    def _forward_shared(
        body: Callable[..., Any], input_ids: Tensor, attention_mask: Tensor, shared: int
    ) -> Tensor:
        rows, width = input_ids.shape
        prefix = body(input_ids=input_ids[:1, :shared], use_cache=True)
        cache = prefix.past_key_values
        if cache is None:  # a body that keeps no cache: run the rows whole
            return body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        cache.batch_repeat_interleave(rows)  # differentiable: the rows' gradients reach the one prefix
        positions = torch.arange(shared, width, device=input_ids.device).expand(rows, -1)
        rest = body(
            input_ids=input_ids[:, shared:],
            attention_mask=attention_mask,
            cache=cache,
            position_ids=positions,
            use_cache=True,
        )
        return torch.cat([prefix.last_hidden_state.expand(rows, -1, -1), rest.last_hidden_state], dim=1)


def lora_config(config: RunConfig) -> LoraConfig:
    lora = config.lora
    targets: list[str] | str = (
        "all-linear" if lora.target_modules == ["all-linear"] else list(lora.target_modules)
    )
    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _same_device(a: torch.device, b: torch.device) -> bool:
    """cuda and cuda:0 are the same device when 0 is the current one."""

    def index(d: torch.device) -> int | None:
        return torch.cuda.current_device() if d.type == "cuda" and d.index is None else d.index

    return a.type == b.type and (a.type != "cuda" or index(a) == index(b))


def _allow_mixed_precision(precision: str) -> None:
    """accelerate keeps one mixed precision per process (a shared state that refuses a change): a trainer
    with another precision than an earlier one in the same process (a benchmark comparing both, a test suite)
    starts that state afresh; the process group (`PartialState`) is kept. Earlier accelerators share the
    state, so they follow the new precision: one trainer at a time."""
    current = AcceleratorState._shared_state.get("_mixed_precision")
    if current is not None and current != precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def lr_lambda(config: RunConfig) -> Any:
    """Learning-rate multiplier per optimizer step: linear warm-up, then constant, linear or cosine decay."""
    opt = config.optimizer

    def factor(step: int) -> float:
        if step < opt.warmup_steps:
            return (step + 1) / opt.warmup_steps
        progress = min(1.0, (step - opt.warmup_steps) / max(1, opt.total_steps - opt.warmup_steps))
        if opt.scheduler == "linear":
            return 1.0 - progress
        if opt.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return factor


class PPOTrainer:
    """Updates the adapter `adapter_name` of `policy` from training batches (see module docstring)."""

    def __init__(
        self,
        policy: SharedPolicy,
        config: RunConfig,
        adapter_name: str = "policy",
        *,
        log_with: Sequence[str] = (),
        logging_dir: str | None = None,
        progress: bool = False,
    ) -> None:
        """`log_with`/`logging_dir`: accelerate's experiment trackers (`self.accelerator.log`); `progress`: a
        progress bar over each update's micro-batches (on the main process)."""
        self.policy, self.config, self.adapter_name = policy, config, adapter_name
        update = config.update
        if adapter_name not in policy.adapter_versions:
            policy.add_trainable_adapter(adapter_name, lora_config(config))
        peft_model: Any = policy.model
        if not isinstance(peft_model, PeftModel):
            raise TypeError(f"policy.model should be a PeftModel after adding adapter {adapter_name!r}")
        peft_model.set_adapter(adapter_name)  # marks only this adapter's LoRA weights trainable
        base: Any = peft_model.get_base_model()
        if update.gradient_checkpointing:
            base.gradient_checkpointing_enable({"use_reentrant": False})
            peft_model.enable_input_require_grads()
        critic = config.advantage.mode == "hierarchical-critic" and update.algo == "ppo"
        hidden_size = int(base.config.hidden_size)
        value_head = nn.Linear(hidden_size, 1).to(policy.device) if critic else None
        if value_head is not None:
            nn.init.zeros_(value_head.weight)
            nn.init.zeros_(value_head.bias)
        on_cuda = policy.device.type == "cuda"
        precision = mixed_precision(update.mixed_precision, policy.device)
        # the served rollout decodes in the weights' type; an update under autocast computes other numbers
        self.recompute_old = update.old_logprobs == "recompute" or (
            update.old_logprobs == "auto" and precision != "no"
        )
        _allow_mixed_precision(precision)
        self.accelerator = Accelerator(
            mixed_precision=precision,
            gradient_accumulation_steps=update.gradient_accumulation_steps,
            cpu=not on_cuda,
            log_with=list(log_with) or None,
            project_dir=logging_dir,
        )
        self.progress = progress and self.accelerator.is_main_process
        if not _same_device(self.accelerator.device, policy.device):
            raise ValueError(
                f"the served model is on {policy.device} but accelerate trains on {self.accelerator.device}; "
                "load the policy on the device accelerate assigns to this process"
            )
        # float32 weights on a CPU under bf16 autocast: the frozen weights are cast once, not at every forward
        # (on a GPU the weights are bf16 already; sharded weights cast their own way)
        cast = torch.bfloat16 if precision == "bf16" and not on_cuda else None
        module = PolicyWithValueHead(peft_model, value_head, cast)
        module.eval()  # the probe compares two forwards: no dropout
        self.logit_transform = model_logit_transform(module.causal_lm(), module.body(), policy.model_name)
        self.trainable = [p for p in module.parameters() if p.requires_grad]
        opt = config.optimizer
        optimizer = torch.optim.AdamW(
            self.trainable,
            lr=opt.resolved_learning_rate,
            betas=(opt.beta1, opt.beta2),
            eps=opt.eps,
            weight_decay=opt.weight_decay,
        )
        self.module = module
        self.model, self.optimizer = self.accelerator.prepare(module, optimizer)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config))
        self.value_head = value_head
        self.model.eval()  # new LoRA layers start in training mode; the engine generates in eval mode
        self.share_prefixes = update.shared_prefix and not update.gradient_checkpointing
        self.updates_done = 0  # update() calls so far: seeds each update's shuffling
        self.optimizer_steps = 0

    # ---- forward pieces ------------------------------------------------------------------------------------
    def _lm_head(self) -> tuple[Tensor, Tensor | None]:
        head = self.module.causal_lm().get_output_embeddings()
        return head.weight, getattr(head, "bias", None)

    def _token_logprobs(self, hidden: Tensor, batch: TrainingBatch) -> tuple[Tensor, Tensor]:
        """(b, T-1) log-probabilities and entropies of the tokens at positions 1..T-1, each row tempered by its
        recorded temperature; computed at the completion tokens only (every loss and metric is masked to them;
        a prompt is ~90% of a row), 0 elsewhere."""
        weight, bias = self._lm_head()
        targets = batch.input_ids[:, 1:].to(hidden.device)
        chosen = batch.completion_mask[:, 1:].to(hidden.device)
        logprobs = torch.zeros(targets.shape, device=hidden.device)
        entropies = torch.zeros(targets.shape, device=hidden.device)
        for temperature in batch.temperatures.unique().tolist():
            rows = (batch.temperatures == temperature).to(hidden.device)[:, None]
            where = (chosen & rows).nonzero(as_tuple=True)  # token p is chosen in the hidden state at p - 1
            lp, ent = token_logprobs_and_entropy_from_hidden(
                hidden[:, :-1][where],
                weight,
                targets[where],
                temperature,
                self.config.update.chunk_size,
                bias,
                logit_transform=self.logit_transform,
            )
            logprobs = logprobs.index_put(where, lp.float())
            entropies = entropies.index_put(where, ent.float().detach())
        return logprobs, entropies

    def _forward(self, batch: TrainingBatch, model: nn.Module) -> tuple[Tensor, Tensor, Tensor | None]:
        """(b, T-1) log-probabilities, entropies and values (critic) of the tokens at positions 1..T-1.

        The value of token p is the value head on the hidden state at p - 1: the state in which token p was
        chosen, whose logits give its log-probability (docs/design.md §4)."""
        device = self.policy.device
        shared = shared_prefix_length(batch.input_ids, batch.lengths) if self.share_prefixes else 0
        hidden, values = model(batch.input_ids.to(device), batch.attention_mask.to(device), shared)
        logprobs, entropies = self._token_logprobs(hidden, batch)
        return logprobs, entropies, None if values is None else values[:, :-1]

    @torch.no_grad()
    def _pre_pass(self, batch: TrainingBatch, reference: bool) -> Tensor:
        """Values (N, T-1) of the tokens at positions 1..T-1 under the current model, or their reference
        log-probs (N, T-1) with the adapter disabled."""
        out = []
        size = self.config.update.micro_batch_size
        for start in range(0, len(batch), size):
            rows = list(range(start, min(start + size, len(batch))))
            part = batch.select(rows)
            context = self.module.peft_model.disable_adapter() if reference else nullcontext()
            with context, self.accelerator.autocast():
                logprobs, _, values = self._forward(part, self.module)
            result = logprobs if reference else values
            assert result is not None
            padded = torch.zeros(len(rows), batch.input_ids.shape[1] - 1)
            padded[:, : result.shape[1]] = result.float().cpu()
            out.append(padded)
        return torch.cat(out)

    @torch.no_grad()
    def _recompute_old(self, batch: TrainingBatch, rows: list[int]) -> Tensor:
        """Log-probabilities (N, T-1) of the tokens at positions 1..T-1 of `rows` (0 elsewhere) under the
        current adapter with the update's numerics (autocast), dropout off: the PPO ratio's old values. Run on
        the first epoch's micro-batches (every process's), so the first step's forwards are the same
        computations and its ratio is exactly 1."""
        out = torch.zeros(len(batch), batch.input_ids.shape[1] - 1)
        self.module.eval()
        try:
            update, processes = self.config.update, self.accelerator.num_processes
            per_step = update.micro_batch_size * update.gradient_accumulation_steps * processes
            for chosen in first_epoch_micro_batches(self._plan(batch, rows), len(rows), per_step):
                part = batch.select(chosen)
                with self.accelerator.autocast():
                    logprobs, _, _ = self._forward(part, self.module)
                out[chosen, : logprobs.shape[1]] = logprobs.float().cpu()
        finally:
            self.module.train()
        return out

    def _old_logprobs(
        self, batch: TrainingBatch, rows: list[int], metrics: dict[str, float]
    ) -> tuple[Tensor, Tensor] | None:
        """With `recompute_old` on a PPO batch: the recomputed old log-probabilities (N, T-1) and the truncated
        importance weights (N, T-1) min(exp(recomputed - rollout), tis_cap) (1 without a cap); the gap to the
        rollout's recorded ones goes into `logprob_mismatch`. None: the ratio uses the recorded ones."""
        if not self.recompute_old or batch.behaviour_cloning or not rows:
            return None
        recomputed = self._recompute_old(batch, rows)
        mask = torch.zeros_like(recomputed)
        mask[rows] = batch.completion_mask[rows, 1:].to(mask.dtype)
        gap = recomputed - batch.old_logprobs[:, 1:]
        tokens = float(mask.sum())
        metrics["logprob_mismatch"] = float(masked_sum(gap.abs(), mask)) / max(tokens, 1.0)
        metrics["logprob_mismatch_tokens"] = tokens
        cap = self.config.update.tis_cap
        weights = torch.ones_like(recomputed)
        if cap is not None:
            weights = gap.exp().clamp(max=cap)
            metrics["tis_weight_mean"] = float(masked_mean(weights, mask))
            metrics["tis_truncated_fraction"] = float(masked_mean((gap.exp() > cap).float(), mask))
        return recomputed, weights

    # ---- the update -------------------------------------------------------------------------------------
    def update(self, batch: TrainingBatch, episodes: Sequence[Episode] = ()) -> dict[str, float]:
        """One PPO (or filtered-BC) update on `batch`; returns metrics. Holds the engine exclusively."""
        update, started = self.config.update, time.perf_counter()
        adjust_threads(self.policy.device)
        metrics: dict[str, float] = dict(batch.metrics)
        with self.policy.exclusive():
            self.model.train()
            try:
                # values aligned with input_ids (position 0 chooses no token); behaviour cloning (the warm start)
                # trains no critic through the shared LoRA: `fit_value_head` fits the head alone
                if self.value_head is not None and not batch.behaviour_cloning:
                    values = nn.functional.pad(self._pre_pass(batch, False), (1, 0))
                    assign_critic_advantages(batch, episodes, values, self.config.advantage)
                    assert batch.old_values is not None and batch.returns is not None
                    live = batch.completion_mask
                    metrics["value_explained_variance"] = explained_variance(
                        batch.old_values[live], batch.returns[live]
                    )
                    finish_advantages(batch, episodes, self.config.advantage)
                reference = self._pre_pass(batch, True) if update.kl_coef > 0 else None
                rows = self._trained_rows(batch, metrics)
                old = self._old_logprobs(batch, rows, metrics)
                sums = self._run_epochs(batch, rows, reference, old)
            finally:
                self.model.eval()
        self.updates_done += 1
        version = self.policy.bump_adapter_version(self.adapter_name)
        tokens = sums.pop("tokens", 0.0)
        mismatch_tokens = sums.pop("mismatch_tokens", 0.0)
        if "logprob_mismatch" not in metrics:  # measured on the first step's rows (recorded old values)
            metrics["logprob_mismatch"] = sums.pop("mismatch", 0.0) / max(mismatch_tokens, 1.0)
            metrics["logprob_mismatch_tokens"] = mismatch_tokens
        sums.pop("mismatch", None)
        norms = sums.pop("grad_norm_sum", 0.0), sums.pop("grad_norm_steps", 0.0)
        metrics["grad_norm"] = norms[0] / max(norms[1], 1.0)
        for name, total in sums.items():
            metrics[name] = total / max(tokens, 1.0)
        mask = batch.completion_mask
        metrics.update(
            trained_tokens=tokens,
            advantage_mean=float(masked_mean(batch.advantages, mask)),
            advantage_abs_mean=float(masked_mean(batch.advantages.abs(), mask)),
            optimizer_steps=float(self.optimizer_steps),
            learning_rate=float(self.scheduler.get_last_lr()[0]),
            adapter_version=float(version),
            update_seconds=time.perf_counter() - started,
        )
        metrics["train_tokens_per_s"] = tokens / max(metrics["update_seconds"], 1e-9)  # all epochs' tokens
        return metrics

    def fit_value_head(self, batch: TrainingBatch, episodes: Sequence[Episode]) -> dict[str, float]:
        """Critic mode: fit the value head alone (the LoRA frozen: no policy weight moves) to the Monte Carlo
        returns of `batch`'s turns (a batch from `build_batch` in critic mode) by ridge regression on the body's
        hidden states (rl/value_fit.py). Returns value_fit_* metrics; {} when there is no value head, no turn,
        or `update.value_fit` is off."""
        if self.value_head is None or not self.config.update.value_fit or len(batch) == 0:
            return {}
        # lambda = 1 and zero values: the value targets are the discounted returns themselves
        monte_carlo = dataclasses.replace(self.config.advantage, lam_turn=1.0, lam_token=1.0)
        targets_batch = dataclasses.replace(batch)
        assign_critic_advantages(targets_batch, episodes, torch.zeros_like(batch.old_logprobs), monte_carlo)
        assert targets_batch.returns is not None
        device, size = self.policy.device, self.config.update.micro_batch_size
        states, targets, episode_of = [], [], []
        with self.policy.exclusive():
            for start in range(0, len(batch), size):
                rows = list(range(start, min(start + size, len(batch))))
                part = batch.select(rows)
                with torch.no_grad(), self.accelerator.autocast():
                    hidden, _ = self.module(part.input_ids.to(device), part.attention_mask.to(device))
                mask = part.completion_mask[:, 1:]  # token p is chosen in the hidden state at p - 1
                states.append(hidden[:, :-1][mask.to(device)].float())
                targets.append(targets_batch.returns[rows, 1 : part.input_ids.shape[1]][mask])
                episode_of.append(
                    torch.tensor([s.episode_index for s in part.samples])[:, None].expand_as(mask)[mask]
                )
            # every fourth episode (by index) is held out: its tokens choose when the fit stops
            held_out = torch.cat(episode_of) % 4 == 3
            metrics = fit_value_head(self.value_head, torch.cat(states), torch.cat(targets), held_out)
        metrics["value_fit_tokens"] = float(sum(len(t) for t in targets))
        return metrics

    def _trained_rows(self, batch: TrainingBatch, metrics: dict[str, float]) -> list[int]:
        rows = list(range(len(batch)))
        skip = self.config.update.skip_zero_advantage and self.config.update.kl_coef == 0
        if skip and self.value_head is None:
            nonzero = (batch.advantages * batch.completion_mask).abs().sum(-1) > 0
            rows = nonzero.nonzero().squeeze(-1).tolist()
        metrics["trained_turns"] = float(len(rows))
        metrics["skipped_zero_advantage_turns"] = float(len(batch) - len(rows))
        return rows

    def _plan(self, batch: TrainingBatch, rows: list[int]) -> list[Step]:
        """This update's optimizer steps (`micro_batches.plan_steps`), seeded by (seed, update index): a resumed
        run draws the same."""
        update = self.config.update
        return plan_steps(
            rows,
            [s.prompt_ids for s in batch.samples],
            batch.lengths.tolist(),
            micro_batch_size=update.micro_batch_size,
            accumulation=update.gradient_accumulation_steps,
            processes=self.accelerator.num_processes,
            epochs=update.resolved_epochs,
            seed=update.seed * 1_000_003 + self.updates_done,
            share_prefixes=self.share_prefixes,
        )

    def _run_epochs(
        self,
        batch: TrainingBatch,
        rows: list[int],
        reference: Tensor | None,
        old: tuple[Tensor, Tensor] | None = None,
    ) -> dict[str, float]:
        """`old`: recomputed old log-probabilities and importance weights, both (N, T-1) (`_old_logprobs`)."""
        sums: dict[str, float] = {}
        first_step_pending = True
        index = self.accelerator.process_index
        steps = [(step.rows, step.micro_batches[index]) for step in self._plan(batch, rows)]
        bar = tqdm(
            total=len(steps) * self.config.update.gradient_accumulation_steps,
            desc="update",
            unit="micro-batch",
            disable=not self.progress,
            leave=False,
        )
        for step_rows, my_rows in steps:
            step_tokens = float(batch.completion_mask[step_rows].sum())
            for micro_rows in my_rows:
                with self.accelerator.accumulate(self.model):
                    if micro_rows:
                        part = batch.select(micro_rows)
                        ref = (
                            None
                            if reference is None
                            else reference[micro_rows, : part.input_ids.shape[1] - 1]
                        )
                        width = part.input_ids.shape[1] - 1
                        part_old = (
                            None if old is None else (old[0][micro_rows, :width], old[1][micro_rows, :width])
                        )
                        self._micro_step(
                            part, ref, step_tokens, sums, first_step_pending and old is None, part_old
                        )
                    elif self.accelerator.sync_gradients and self.accelerator.num_processes > 1:
                        self._idle_micro_step(batch.select(step_rows[:1]))
                    if self.accelerator.sync_gradients:
                        self._optimizer_step(sums)
                        first_step_pending = False
                bar.update()
        bar.close()
        return _summed_over_processes(sums) if self.accelerator.num_processes > 1 else sums

    def _idle_micro_step(self, part: TrainingBatch) -> None:
        """A zero loss through every trainable parameter, for a process with no row of its own when the
        gradients are all-reduced: DDP's all-reduce needs every process to join it (the others' rows count)."""
        device = self.policy.device
        with self.accelerator.autocast():
            hidden, values = self.model(part.input_ids.to(device), part.attention_mask.to(device))
        zero = hidden.float().sum() * 0.0
        if values is not None:
            zero = zero + values.float().sum() * 0.0
        self.accelerator.backward(zero)

    def _micro_step(
        self,
        part: TrainingBatch,
        reference: Tensor | None,
        step_tokens: float,
        sums: dict[str, float],
        measure_mismatch: bool,
        old_and_weights: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        update, device = self.config.update, self.policy.device
        with self.accelerator.autocast():
            logprobs, entropies, values = self._forward(part, self.model)
        mask = part.completion_mask[:, 1:].to(device)
        old = part.old_logprobs[:, 1:].to(device)
        advantages = part.advantages[:, 1:].to(device)
        weights = part.weights[:, 1:].to(device)
        if old_and_weights is not None:  # the recomputed old values, and the rollout's importance weights
            old, weights = old_and_weights[0].to(device), weights * old_and_weights[1].to(device)
        tokens = float(mask.sum())
        terms: dict[str, Tensor] = {}
        if part.behaviour_cloning:
            loss = -masked_mean(logprobs * weights, mask)
            terms["bc_loss"] = loss.detach()
        else:
            loss, ppo_metrics = ppo_clip_loss(
                logprobs, old, advantages, mask, update.clip_eps, weights, update.clip_eps_high
            )
            terms.update(pg_loss=loss.detach(), **ppo_metrics)
        if values is not None and part.returns is not None and part.old_values is not None:
            v_loss, v_metrics = value_loss(
                values.float(),
                part.returns[:, 1:].to(device),
                part.old_values[:, 1:].to(device),
                mask,
                update.value_clip,
            )
            loss = loss + update.value_coef * v_loss
            terms.update(value_loss=v_loss.detach(), **v_metrics)
        if reference is not None:
            kl = kl_penalty(logprobs, reference.to(device), mask, update.kl_estimator)  # type: ignore[arg-type]
            loss = loss + update.kl_coef * kl
            terms["kl"] = kl.detach()
        terms["loss"] = loss.detach()
        terms["entropy"] = masked_mean(entropies, mask)
        # accelerate divides by the accumulation steps and DDP averages over the processes; re-weight so the
        # step's loss is a token mean over the whole step, whatever the split into micro-batches and processes.
        processes = self.accelerator.num_processes
        scale = tokens / max(step_tokens, 1.0) * update.gradient_accumulation_steps * processes
        self.accelerator.backward(loss * scale)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value) * tokens
        sums["tokens"] = sums.get("tokens", 0.0) + tokens
        if measure_mismatch:
            gap = masked_sum((logprobs.detach() - old).abs(), mask)
            sums["mismatch"] = sums.get("mismatch", 0.0) + float(gap)
            sums["mismatch_tokens"] = sums.get("mismatch_tokens", 0.0) + tokens

    def _optimizer_step(self, sums: dict[str, float]) -> None:
        max_norm = self.config.optimizer.max_grad_norm
        if max_norm > 0:
            norm = self.accelerator.clip_grad_norm_(self.trainable, max_norm)
            sums["grad_norm_sum"] = sums.get("grad_norm_sum", 0.0) + float(norm)
            sums["grad_norm_steps"] = sums.get("grad_norm_steps", 0.0) + 1.0
        self.optimizer.step()
        if not self.accelerator.optimizer_step_was_skipped:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer_steps += 1

    # ---- serving under sharding -----------------------------------------------------------------------------
    @contextmanager
    def serving(self) -> Iterator[None]:
        """Around rollouts: under FSDP, gather the full parameters so the engine can generate."""
        from accelerate.utils import DistributedType

        if self.accelerator.distributed_type == DistributedType.FSDP:
            from torch.distributed.fsdp import FullyShardedDataParallel

            with FullyShardedDataParallel.summon_full_params(self.model, writeback=False):
                yield
        else:
            yield


def _summed_over_processes(sums: dict[str, float]) -> dict[str, float]:
    """Every process's metric sums added up (a collective: every process calls it)."""
    total: dict[str, float] = {}
    for part in gather_object([sums]):
        for name, value in part.items():
            total[name] = total.get(name, 0.0) + value
    return total
