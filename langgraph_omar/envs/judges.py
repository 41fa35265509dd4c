"""The chat model an environment's judge runs on: the commands' own (`chat_model.served_judge`), or one named
by one string (`--judge-model`).

The commands give an environment's judge the served base model (adapter disabled), its calls recorded as the
role `judge` wherever the graph makes them. A judge model of one's own is either
- a local model: an embedded name, a transformers model directory or a hub id, served by the same engine
  machinery as the policy (`ChatPolicy`, with the served judge's device, temperature and token budget);
- a LangChain chat model as `module:attribute`: an instance, or a callable that returns one (a class, a
  factory), imported with the current folder on the path.
A name that does not load is a one-line error before any episode is played.
"""

from __future__ import annotations

from pathlib import Path

from langchain_core.language_models import BaseChatModel

from langgraph_omar.errors import OmarError, first_line


def is_import_target(spec: str) -> bool:
    """`module:attribute` (a dotted module name, a colon, an identifier), not a path that exists."""
    module, sep, attribute = spec.partition(":")
    if not sep or Path(spec).expanduser().exists():
        return False
    return all(part.isidentifier() for part in module.split(".")) and attribute.isidentifier()


def judge_chat_model(spec: str, served: BaseChatModel | None = None) -> BaseChatModel:
    """The chat model `spec` names (see the module docstring). served: the judge the command would use
    otherwise, whose settings a local judge model takes when it is a `ChatPolicy`."""
    if not spec.strip():
        raise OmarError("--judge-model: empty; give a model name, directory or hub id, or module:attribute")
    if is_import_target(spec):
        from langgraph_omar.envs.registry import import_attribute

        _, found = import_attribute(spec)
        if not isinstance(found, BaseChatModel) and callable(found):
            try:
                found = found()
            except Exception as error:  # a factory that needs arguments, keys, a server: its error, one line
                raise OmarError(
                    f"--judge-model {spec}: calling it raised {first_line(error, with_type=True)}"
                ) from None
        if not isinstance(found, BaseChatModel):
            raise OmarError(
                f"--judge-model {spec}: {type(found).__name__} is not a LangChain chat model (BaseChatModel), "
                "nor a callable returning one"
            )
        return found
    from langgraph_omar.chat_model import ChatPolicy

    if isinstance(served, ChatPolicy):
        judge = served.model_copy(update={"model_name": spec, "adapter": None})
    else:
        judge = ChatPolicy(model=spec, temperature=0.0)
    _ = judge.engine  # load it now: a model that does not load fails here, in one line
    return judge
