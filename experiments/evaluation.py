"""The evaluate stage: score every saved sample file and write results.json / results.md.

exact   TV and KL(p_data || p_model) between the empirical law of the samples and the exact law (half a
        pseudo-count per state smooths the empirical law for KL), with the Monte-Carlo noise floor of TV.
hmm     exact per-token NLL of generated text under the true HMM, unigram entropy (reference: the entropy rate
        and the held-out data's unigram entropy), and window_tv: TV between the law of `evaluate.window` (3)
        consecutive tokens pooled over positions and its exact value (reference: the same TV for as many true
        sequences, i.e. the sampling-noise level).
digits  FID / KID / Inception-style score in the feature space of a digit classifier trained here (test accuracy
        reported), classifier confidence, and class consistency for class-conditional samples.
text    generative perplexity under an autoregressive evaluator LM trained here on the corpus, unigram entropy,
        self-BLEU.
a user's data (npy, tfds, text_folder: no known law; `GenericScorer`): against the held-out rows, the held-out
        NELBO per token of the network behind each row (teacher, students; a mixture student through its lambda-
        marginal), the exact TV to the held-out rows' empirical law with its Monte-Carlo noise floor where
        K^D <= evaluate.max_exact_states, else the per-position marginal KL and the pairwise mutual-information
        error (reference: the same for as many training rows), and the unigram entropy.
"""
from __future__ import annotations

import json

import jax
import numpy as np

from di4c_jax import eval as ev, parallel
from di4c_jax.data import SubsetSource
from di4c_jax.eval import generic
from di4c_jax.eval.nelbo import bound_name, heldout_nelbo
from di4c_jax.registry import Registry
from experiments.setup import USER_DATA_KINDS, Setup
from experiments.stages import sample_labels, trained_networks


def source_array(source) -> tuple[np.ndarray, np.ndarray | None]:
    rows = [source[i] for i in range(len(source))]
    x = np.stack([r["x0"] for r in rows]).astype(np.int32)
    labels = np.asarray([r["label"] for r in rows], np.int32) if "label" in rows[0] else None
    return x, labels


class ExactScorer:
    def __init__(self, setup: Setup):
        self.k = setup.info.vocab_size
        self.p = setup.law.probs()

    def reference(self) -> dict:
        return {"data_entropy_nats": float(-(self.p[self.p > 0] * np.log(self.p[self.p > 0])).sum())}

    def __call__(self, tokens, labels=None) -> dict:
        q = ev.empirical_law(tokens, self.k)
        n = len(tokens)
        return {"tv": ev.tv_distance(self.p, q),
                "kl": ev.kl_divergence(self.p, q, smoothing=min(1.0, 0.5 * q.size / n)),
                "tv_noise_floor": ev.mc_noise_floor(self.p, n)}


class HMMScorer:
    def __init__(self, setup: Setup):
        self.hmm = setup.hmm
        self.entropy_rate, _ = ev.hmm_entropy_rate(jax.random.key(0), *self.hmm)
        # NLL alone rewards collapsed, over-typical samples (NLL below the entropy rate): read it beside the
        # held-out data's own unigram entropy.
        self.data_entropy = ev.mean_unigram_entropy(source_array(setup.eval_source)[0])
        # A proper distance that sharpening cannot game: TV between the pooled law of `window` consecutive tokens
        # in the samples and its exact value; its sampling-noise level is the same TV for true HMM sequences.
        self.vocab, self.window = setup.info.vocab_size, setup.exp.evaluate.window
        self.window_law = ev.hmm_window_law(*self.hmm, length=setup.num_dims, window=self.window)
        true_seqs, _ = ev.sample_hmm(jax.random.key(1), setup.exp.sample.num_samples, setup.num_dims, *self.hmm)
        self.window_floor = self._window_tv(np.asarray(true_seqs))

    def _window_tv(self, tokens) -> float:
        return ev.tv_distance(self.window_law, ev.empirical_law(ev.window_tokens(tokens, self.window), self.vocab))

    def reference(self) -> dict:
        return {"hmm_entropy_rate_nats": float(self.entropy_rate), "data_unigram_entropy": self.data_entropy,
                f"window{self.window}_tv_of_true_samples": self.window_floor}

    def __call__(self, tokens, labels=None) -> dict:
        nll = -np.asarray(ev.hmm_log_likelihood(tokens, *self.hmm)) / tokens.shape[1]
        return {"nll_per_token": float(nll.mean()), "unigram_entropy": ev.mean_unigram_entropy(tokens),
                "window_tv": self._window_tv(np.asarray(tokens))}


class DigitsScorer:
    def __init__(self, setup: Setup):
        cfg = setup.exp.evaluate
        train_x, train_y = source_array(setup.train_source)
        self.test_x, self.test_y = source_array(setup.eval_source)
        clf_cfg = ev.ClassifierConfig(num_pixels=setup.num_dims, num_levels=setup.info.vocab_size,
                                      num_classes=setup.info.num_classes)
        self.apply, self.params = ev.train_classifier(jax.random.key(cfg.classifier_seed), clf_cfg,
                                                      train_x, train_y, num_steps=cfg.classifier_steps)
        test_probs, self.real_feats = ev.classify(self.apply, self.params, self.test_x)
        self.test_accuracy = ev.accuracy(test_probs, self.test_y)
        self.real_confidence = ev.confidence(test_probs)
        self.kid_subset = cfg.kid_subset_size

    def reference(self) -> dict:
        return {"classifier_test_accuracy": self.test_accuracy, "real_test_confidence": self.real_confidence,
                "num_real": int(len(self.test_x))}

    def __call__(self, tokens, labels=None) -> dict:
        probs, feats = ev.classify(self.apply, self.params, tokens)
        kid_mean, kid_std = ev.kid(jax.random.key(1), self.real_feats, feats, num_subsets=50,
                                   subset_size=min(self.kid_subset, len(feats), len(self.real_feats)))
        out = {"fid": ev.fid(self.real_feats, feats), "kid": kid_mean, "kid_std": kid_std,
               "confidence": ev.confidence(probs), "inception_score": ev.inception_score(probs)[0]}
        if labels is not None:
            out["class_accuracy"] = ev.accuracy(probs, labels)
        return out


class TextScorer:
    def __init__(self, setup: Setup):
        cfg = setup.exp.evaluate
        train_x, _ = source_array(setup.train_source)
        held_x, _ = source_array(setup.eval_source)
        lm_cfg = ev.LMConfig(vocab_size=setup.info.vocab_size, max_len=setup.num_dims, d_model=cfg.lm_width,
                             num_layers=cfg.lm_layers)
        self.apply, self.params = ev.train_lm(jax.random.key(0), lm_cfg, train_x, num_steps=cfg.lm_steps)
        self.held_ppl = self.gen_ppl(held_x)
        self.held_entropy = ev.mean_unigram_entropy(held_x)
        self.bleu_n = cfg.self_bleu_samples
        self.held_bleu = ev.self_bleu(held_x[:self.bleu_n])

    def gen_ppl(self, tokens) -> float:
        return ev.generative_perplexity(apply=self.apply, params=self.params, samples=tokens, batch_size=256).ppl

    def reference(self) -> dict:
        return {"heldout_gen_ppl": self.held_ppl, "heldout_unigram_entropy": self.held_entropy,
                "heldout_self_bleu": self.held_bleu}

    def __call__(self, tokens, labels=None) -> dict:
        return {"gen_ppl": self.gen_ppl(tokens),
                "unigram_entropy": ev.mean_unigram_entropy(tokens),
                "self_bleu": ev.self_bleu(tokens[:self.bleu_n])}


def sample_rows(source, max_rows: int, seed: int = 0) -> np.ndarray:
    """int32[min(len, max_rows), D]: all rows of a source, or a seeded random subset of max_rows of them."""
    if len(source) <= max_rows:
        return source_array(source)[0]
    keep = np.sort(np.random.default_rng(seed).choice(len(source), max_rows, replace=False))
    return source_array(SubsetSource(source, keep))[0]


class GenericScorer:
    """A user's data (no known law): samples against the held-out rows, networks by their held-out NELBO."""

    def __init__(self, setup: Setup):
        self.setup, cfg = setup, setup.exp.evaluate
        self.k = setup.info.vocab_size
        self.held, self.held_labels = source_array(setup.eval_source)
        self.train_rows = sample_rows(setup.train_source, cfg.reference_rows)
        self.exact = generic.num_joint_states(setup.num_dims, self.k) <= cfg.max_exact_states
        self.pairs = None if self.exact else generic.position_pairs(setup.num_dims, cfg.mi_pairs)
        self.bound_key = f"heldout_{bound_name(setup.process, setup.exp.teacher.loss)}_per_token"
        self._bounds: dict[str, float] | None = None

    def reference(self) -> dict:
        ref = {"heldout_rows": int(len(self.held)), "joint_states": f"{self.k}^{self.setup.num_dims}",
               "heldout_unigram_entropy": ev.mean_unigram_entropy(self.held)}
        if not self.exact:  # what as many real (training) rows score: the level a perfect model reaches
            ref["marginal_kl_of_train_rows"] = generic.marginal_kl(self.held, self.train_rows, self.k)
            ref["pairwise_mi_error_of_train_rows"] = generic.mutual_information_error(
                self.held, self.train_rows, self.k, self.pairs)
        return ref

    def __call__(self, tokens, labels=None) -> dict:
        tokens = np.asarray(tokens)
        if self.exact:
            out = {"tv": generic.two_sample_tv(tokens, self.held, self.k),
                   "tv_noise_floor": generic.two_sample_tv_floor(self.train_rows, len(tokens), len(self.held),
                                                                 self.k)}
        else:
            out = {"marginal_kl": generic.marginal_kl(self.held, tokens, self.k),
                   "pairwise_mi_error": generic.mutual_information_error(self.held, tokens, self.k, self.pairs)}
        return {**out, "unigram_entropy": ev.mean_unigram_entropy(tokens)}

    def model_metrics(self, model: str) -> dict:
        """{heldout_<nelbo|x0_ce>_per_token: value} of the network behind a sample row (None for a hybrid)."""
        if self._bounds is None:
            self._bounds = self._heldout_bounds()
        return {self.bound_key: self._bounds.get(model)}

    def _heldout_bounds(self) -> dict[str, float]:
        cfg, setup = self.setup.exp.evaluate, self.setup
        rows = slice(0, cfg.nelbo_rows)
        cond = self.held_labels[rows] if setup.conditional and self.held_labels is not None else None
        return {name: heldout_nelbo(jax.random.key(cfg.nelbo_seed), denoiser=net.denoiser, params=net.params,
                                    process=setup.process, x0=self.held[rows], cond=cond,
                                    config=setup.exp.teacher.loss, repeats=cfg.nelbo_repeats,
                                    num_lambda=cfg.nelbo_lambdas)
                for name, net in trained_networks(setup).items()}


SCORERS: Registry[type] = Registry("evaluator (by data kind)")
SCORERS.register("exact", ExactScorer)
SCORERS.register("hmm", HMMScorer)
SCORERS.register("digits", DigitsScorer)
SCORERS.register("pystdlib_text", TextScorer)
for _kind in USER_DATA_KINDS:
    SCORERS.register(_kind, GenericScorer)


def make_scorer(setup: Setup):
    """The evaluator registered for the experiment's data kind."""
    kind = setup.exp.data["kind"]
    if kind not in SCORERS:
        raise ValueError(f"no evaluator for data kind {kind!r} (samples are saved as .npy for outside scoring); "
                         f"evaluators: {SCORERS.names()}")
    return SCORERS.get(kind)(setup)


def evaluate(setup: Setup) -> dict:
    """Score every sample file (on every process of a multi-host run: scoring is host-local); process 0 writes
    results.json / results.md."""
    scorer = make_scorer(setup)
    rows = []
    for meta_path in sorted((setup.workdir / "samples").glob("*.json")):
        meta = json.loads(meta_path.read_text())
        tokens = np.load(meta_path.with_suffix(".npy"))
        per_model = scorer.model_metrics(meta["model"]) if hasattr(scorer, "model_metrics") else {}
        rows.append({**meta, **scorer(tokens, sample_labels(setup, len(tokens))), **per_model})
    rows.sort(key=lambda r: (model_rank(r["model"]), r["num_steps"]))
    results = {"experiment": setup.exp.name or setup.workdir.name, "reference": scorer.reference(),
               "rows": rows}
    if parallel.is_writer():
        (setup.workdir / "results.json").write_text(json.dumps(results, indent=1))
        (setup.workdir / "results.md").write_text(markdown_table(results))
    return results


def model_rank(model: str) -> tuple[int, int]:
    """Table order: teacher, student (round 1), student<r> by round, hybrid."""
    if model.startswith("student"):
        return 1, int(model[len("student"):] or 1)
    order = {"teacher": (0, 0), "hybrid": (2, 0)}
    return order[model] if model in order else (3, 0)

SKIP_COLUMNS = {"model", "num_steps", "nfe", "teacher_nfe", "num_samples", "seconds"}


def markdown_table(results: dict) -> str:
    rows = results["rows"]
    metrics = [k for k in rows[0] if k not in SKIP_COLUMNS] if rows else []
    lines = [f"### {results['experiment']}", "",
             "reference: " + ", ".join(f"{k} = {format_value(v)}" for k, v in results["reference"].items()), "",
             "| model | steps (NFE) | " + " | ".join(metrics) + " | sampling s |",
             "|---|---|" + "---|" * (len(metrics) + 1)]
    for r in rows:
        name = r["model"] if r["model"] != "hybrid" else f"hybrid ({r['nfe'] - r['teacher_nfe']} student + " \
                                                          f"{r['teacher_nfe']} teacher)"
        lines.append(f"| {name} | {r['nfe']} | " + " | ".join(format_value(r[m]) for m in metrics)
                     + f" | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def format_value(v) -> str:
    """A table cell: floats to 4 significant digits, None as '-'."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
