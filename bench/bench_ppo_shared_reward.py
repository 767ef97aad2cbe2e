"""Memory of PPO's reward model: a third adapter on the policy's base vs a separately loaded model.

A random Llama of about 110 M parameters (hidden 768, 12 layers, 32k vocabulary) stands in for
a base; a reward-model run folder on it (random LoRA and score head, as the reward method
saves them) is scored both ways. Each way runs in its own fresh process: load the policy as
PPO does (4-bit base, policy and value adapters), then the reward model, and report the
resident memory the reward model added (and the CUDA memory on a GPU). The scores of both
ways are printed too, as a check that they agree.

    python bench/bench_ppo_shared_reward.py
    python bench/bench_ppo_shared_reward.py --quantization none
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = ["Question 1: can you help me with task 1?", "Hi", "Tell me about the weather."]
ANSWERS = [" Sure, happy to help with that question.", " No. Whatever.", " It is sunny and warm today."]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_base_and_reward_run(folder: Path, quantization: str) -> tuple[Path, Path]:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForCausalLM

    from backend.rewards.scoring import write_reward_marker
    from backend.runs.config import default_config, save_yaml
    from backend.testing.tiny_model import build_tiny_tokenizer
    from backend.training.trainer_builders import build_lora_config

    base = folder / "base"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                         num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=512,
                         tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(base)
    build_tiny_tokenizer().save_pretrained(base)
    run = folder / "reward-run"
    cfg = default_config("bradley_terry", model=str(base), quantization=quantization, max_length=256)
    save_yaml(cfg, run / "config.yaml")
    seq = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    seq.config.pad_token_id = 0
    peft = get_peft_model(seq, build_lora_config(cfg))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name or "score" in name:
                param.normal_(0, 0.05)
    peft.save_pretrained(run / "adapter")
    write_reward_marker(run / "adapter", cfg)
    return base, run


def measure(way: str, base: str, run: str, quantization: str) -> dict:
    import gc

    import torch

    from backend.methods.ppo import load_scorer
    from backend.methods.ppo_training.trainer import attach_value_function
    from backend.rewards.scoring import load_reward_scorer
    from backend.runs.config import default_config
    from backend.training.trainer_builders import build_lora_config, build_model, build_tokenizer, choose_precision

    cfg = default_config("ppo", model=base, quantization=quantization, reward_model=run, max_length=256)
    tokenizer = build_tokenizer(base, cfg)
    model = attach_value_function(build_model(base, cfg, choose_precision()), build_lora_config(cfg))
    gc.collect()
    cuda = torch.cuda.is_available()
    before, cuda_before = rss_mb(), torch.cuda.memory_allocated() / 2 ** 20 if cuda else 0.0
    if way == "shared":
        scorer = load_scorer(cfg, policy_model=model, tokenizer=tokenizer, log=lambda message: None)
    else:
        scorer = load_reward_scorer(run, log=lambda message: None)
    gc.collect()
    added = rss_mb() - before
    cuda_added = torch.cuda.memory_allocated() / 2 ** 20 - cuda_before if cuda else None
    return {"way": way, "rss_added_mb": round(added, 1),
            "cuda_added_mb": None if cuda_added is None else round(cuda_added, 1),
            "scores": [round(s, 5) for s in scorer.score(PROMPTS, ANSWERS)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantization", default="4bit", choices=("4bit", "8bit", "none"))
    parser.add_argument("--measure", nargs=3, metavar=("WAY", "BASE", "RUN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, args.quantization)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        base, run = make_base_and_reward_run(Path(tmp), args.quantization)
        results = []
        for way in ("separate", "shared"):
            out = subprocess.run([sys.executable, __file__, "--quantization", args.quantization, "--measure", way,
                                  str(base), str(run)], capture_output=True, text=True, check=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in results:
        print(json.dumps(r))
    separate, shared = results
    print(f"Reward model added {separate['rss_added_mb']} MB RSS loaded separately, {shared['rss_added_mb']} MB as "
          f"a third adapter on the shared {args.quantization} base"
          + (f"; CUDA {separate['cuda_added_mb']} MB vs {shared['cuda_added_mb']} MB" if shared["cuda_added_mb"]
             is not None else "") + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
