"""``adaptlab export``: a generator as a GGUF file (llama.cpp, LM Studio, transformers' GGUF loader) or an Ollama
model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from adaptlab.cli.common import out

HELP = "Export a generator (SFT, DPO or PPO artifact, or a causal LM) to GGUF or an Ollama model directory."
export_app = typer.Typer(help=HELP, no_args_is_help=True)

Source = Annotated[str, typer.Argument(help="A generator artifact (LoRA is merged first), a causal LM directory or a "
                                            "model name such as smollm2-135m.", show_default=False)]
Type = Annotated[str, typer.Option("--type", help="f16 (matrices in half precision), f32 (lossless, twice "
                                                  "f16's size) or q8_0 (8-bit blocks; about half f16's size, logits move "
                                                  "by tenths).")]


@export_app.command("gguf")
def gguf(
    artifact: Source,
    output: Annotated[Path, typer.Option("--output", "-o", help="The .gguf file to write.", show_default=False)],
    type: Type = "f16",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the file already at --output (refused otherwise).", metavar="")] = False,
) -> None:
    """One GGUF file: the merged weights, the tokenizer and the chat template (llama architecture)."""
    from adaptlab.export import export_gguf

    summary = export_gguf(artifact, output, type=type, overwrite=overwrite)
    out.print(f"exported {artifact} to {summary['path']} ({summary['type']}, {summary['tensors']} tensors, "
              f"{summary['size_bytes'] / 2**20:.1f} MiB)")


@export_app.command("ollama")
def ollama(
    artifact: Source,
    output: Annotated[Path, typer.Option("--output", "-o", help="The directory to write (model.gguf and Modelfile).", show_default=False)],
    type: Type = "f16",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an Ollama export already at --output (refused otherwise).", metavar="")] = False,
) -> None:
    """An Ollama model directory: model.gguf and a Modelfile with the chat template and stop tokens."""
    from adaptlab.export import export_ollama

    summary = export_ollama(artifact, output, type=type, overwrite=overwrite)
    template = "ChatML template" if summary["template"] else "the GGUF's own chat template"
    out.print(f"exported {artifact} to {output} ({summary['type']}, {summary['size_bytes'] / 2**20:.1f} MiB, {template}, "
              f"stop {', '.join(summary['stop']) or 'none'}); run: ollama create NAME -f {summary['modelfile']}")
