"""A random-initialised Hugging Face GPT2LMHeadModel saved with save_pretrained(safe_serialization=True)."""
import torch
import transformers


def save_random_gpt2(folder, *, seed: int = 0, vocab_size: int = 300, n_positions: int = 32, n_embd: int = 64,
                     n_layer: int = 2, n_head: int = 4, **overrides):
    """Writes folder/model.safetensors + config.json; returns the model (eval mode). LayerNorm parameters are
    perturbed (HF initialises them to 1 and 0) so that a converter mixing them up fails."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd,
                                     n_layer=n_layer, n_head=n_head, bos_token_id=None, eos_token_id=None,
                                     **overrides)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder, safe_serialization=True)
    return model
