"""Evaluation metrics: exact small-space laws (TV/KL), learned-feature image metrics (FID/KID/IS, classifier
confidence), text diversity (entropy, self-BLEU), evaluator-LM generative perplexity (`generative_perplexity`, the
SDTT and MDLM protocols, scored by a tiny LM or GPT-2) and exact HMM likelihoods, per-noise-level
student-vs-teacher diagnostics, and the generic evaluator of data with no known law (two-sample TV and its noise
floor, marginal KL, pairwise mutual-information error, held-out NELBO)."""
from di4c_jax.eval.classifier import (ClassifierConfig, accuracy, classify, confidence, init_classifier,
                                      load_classifier, save_classifier, train_classifier)
from di4c_jax.eval.diagnostics import DIAGNOSTICS, diagnose_point, one_step_denoise
from di4c_jax.eval.exact import (all_states, empirical_law, kl_divergence, mc_noise_floor, state_index,
                                 tv_distance)
from di4c_jax.eval.generic import (marginal_kl, mutual_information_error, position_pairs, two_sample_tv,
                                   two_sample_tv_floor)
from di4c_jax.eval.nelbo import heldout_nelbo, marginal_denoiser
from di4c_jax.eval.fid import feature_stats, fid, frechet_distance, inception_score, kid
from di4c_jax.eval.gen_ppl import GenPPL, generative_perplexity
from di4c_jax.eval.gpt2 import GPT2, GPT2Config, init_gpt2
from di4c_jax.eval.hmm import (hmm_entropy_rate, hmm_log_likelihood, hmm_masked_posterior_sample,
                               hmm_prefix_log_likelihood, hmm_window_law, random_hmm, sample_hmm, window_tokens)
from di4c_jax.eval.laws import IsingChain, ParityLaw, ProductMixture
from di4c_jax.eval.lm import LMConfig, chunk_stream, init_lm, train_lm
from di4c_jax.eval.text import mean_unigram_entropy, self_bleu, sentence_bleu, unigram_entropy

__all__ = [
    "ClassifierConfig", "accuracy", "classify", "confidence", "init_classifier", "load_classifier",
    "save_classifier", "train_classifier",
    "DIAGNOSTICS", "diagnose_point", "one_step_denoise",
    "all_states", "empirical_law", "kl_divergence", "mc_noise_floor", "state_index", "tv_distance",
    "marginal_kl", "mutual_information_error", "position_pairs", "two_sample_tv", "two_sample_tv_floor",
    "heldout_nelbo", "marginal_denoiser",
    "feature_stats", "fid", "frechet_distance", "inception_score", "kid",
    "GenPPL", "generative_perplexity", "GPT2", "GPT2Config", "init_gpt2",
    "hmm_entropy_rate", "hmm_log_likelihood", "hmm_masked_posterior_sample", "hmm_prefix_log_likelihood",
    "hmm_window_law", "random_hmm", "sample_hmm", "window_tokens",
    "IsingChain", "ParityLaw", "ProductMixture",
    "LMConfig", "chunk_stream", "init_lm", "train_lm",
    "mean_unigram_entropy", "self_bleu", "sentence_bleu", "unigram_entropy",
]
