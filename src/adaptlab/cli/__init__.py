"""The ``adaptlab`` command line: a thin layer over the Python API, one module per family.

Bad input raises ``AdaptlabError`` anywhere below; ``main`` prints it as one line and exits with code 2.
The command groups (``train``, ``sft``, ``rlhf``, ``rag``) are made of the registered families' commands
(``adaptlab.families``: each family names its group and the function that adds its command) and the group's own
tools (``GROUP_TOOLS``: evaluating artifacts, indexing). Their options are generated from the parameter dataclasses,
which import the model libraries, so a group is built only when invoked: ``adaptlab --help`` starts fast.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Annotated

import typer

from adaptlab.errors import AdaptlabError
from adaptlab.families import GROUPS, in_group, load_plugins, resolve

HELP = "Adapt a language model to your task in every way the field knows, and measure which is worth it."
LAZY_GROUPS = GROUPS  # group -> help: built only when invoked
#: a group's commands that are not a family's: group -> functions adding them to the group's app
GROUP_TOOLS = {"sft": ("adaptlab.cli.sft:add_tools",), "rlhf": ("adaptlab.cli.rlhf:add_tools",),
               "rag": ("adaptlab.cli.rag:add_tools", "adaptlab.cli.rag_adapt:add_adapt")}


def verbosity(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", metavar="",
                                          help="Show the libraries' deprecation and future warnings (hidden by default).")] = False,
) -> None:
    """Deprecation notices from transformers, Lightning and torch are addressed to their developers, not to someone
    training a model: hidden unless ``--verbose`` (comparison workers inherit the setting through the environment)."""
    if not verbose:
        os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore::FutureWarning")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)


def group_app(name: str) -> typer.Typer:
    """A command group: its own tools, then every registered family's command in it."""
    app = typer.Typer(help=GROUPS[name], no_args_is_help=True)
    for add in GROUP_TOOLS.get(name, ()):
        resolve(add)(app)
    for family in in_group(name):
        resolve(family.cli)(app)
    return app


def build_app(argv: list[str]) -> typer.Typer:
    from adaptlab.cli import compare, feedback, serve, tools

    load_plugins()  # installed packages' families and methods (entry points "adaptlab.plugins")
    app = typer.Typer(help=HELP, no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                      callback=verbosity)
    invoked = next((arg for arg in argv[1:] if not arg.startswith("-")), None)
    for name, help_text in GROUPS.items():
        group = group_app(name) if name == invoked else typer.Typer(help=help_text, no_args_is_help=True)
        app.add_typer(group, name=name, help=help_text)
    app.add_typer(feedback.feedback_app, name="feedback", help="Collect human rankings of model outputs in a browser, for reward models.")
    app.add_typer(resolve("adaptlab.cli.export:export_app"), name="export", help="Export a generator to GGUF (llama.cpp) or an Ollama model directory.")
    app.command()(compare.compare)
    app.command()(serve.serve)
    for command in (tools.generate, tools.merge, tools.predict, tools.embed, tools.models):
        app.command()(command)
    app.command("data")(tools.describe_data)
    return app


def usage_error_line(exc: typer.TyperException) -> str:
    """Click's own usage errors (unknown option, missing value, bad choice) as one line, like ours, naming the
    command whose ``--help`` lists the right spelling, instead of a multi-line panel."""
    context = getattr(exc, "ctx", None)
    hint = f" (see '{context.command_path} --help')" if context is not None else ""
    return " ".join(f"{exc.format_message().rstrip('.')}{hint}".split())


def main() -> None:
    from typer.main import get_command

    try:
        exit_code = get_command(build_app(sys.argv)).main(args=sys.argv[1:], prog_name="adaptlab", standalone_mode=False)
        if exit_code == 130:  # click turns Ctrl-C into exit code 130
            raise KeyboardInterrupt
        sys.exit(exit_code if isinstance(exit_code, int) else 0)
    except typer.Abort:
        print("adaptlab: aborted", file=sys.stderr)
        sys.exit(1)
    except typer.TyperException as exc:  # typer's vendored click.ClickException: usage errors
        if type(exc).__name__ != "NoArgsIsHelpError":  # the help text was already printed
            print(f"adaptlab: error: {usage_error_line(exc)}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except AdaptlabError as exc:
        print(f"adaptlab: error: {exc}", file=sys.stderr)  # one line, never wrapped
        sys.exit(2)
    except KeyboardInterrupt:
        print("adaptlab: interrupted; nothing half-written was kept", file=sys.stderr)
        sys.exit(130)
