"""Networks from tensors: a super-gradients state dict, or deterministic random weights."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from flax import nnx

from nasjax.model import fusion
from nasjax.model.core import Network


def network_from_state_dict(
    state_dict: Mapping[str, Any],
    variant: str | None = None,
    *,
    form: str | None = "full",
    class_names: Sequence[str] | None = None,
) -> Network:
    """A `Network` from a super-gradients state dict in any QARepVGG form, fused to `form` (None keeps
    the state dict's form). The variant and class count are inferred from the shapes unless given."""
    from nasjax.model.state_dict import state_dict_to_variables

    _, source_form, graphdef, variables = state_dict_to_variables(state_dict, variant)
    model = nnx.merge(graphdef, variables)
    if form is not None and form != source_form:
        model = fusion.fuse(model, form)
    return Network(model, class_names)


def build_network(
    variant: str = "yolo_nas_s",
    *,
    form: str = "full",
    num_classes: int = 80,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    init: str = "test",
) -> Network:
    """A `Network` with deterministic random weights: the training-form tensors that
    `nasjax.model.deterministic_weights` makes for `seed`, fused to `form`. The same seed gives the
    same weights on every machine. init "test" (default) randomises BatchNorm statistics and every
    other parameter (what the parity tests use); "scratch" is PyTorch's default initialisation with
    the reference head's class prior (what training from scratch starts from)."""
    from nasjax.model.deterministic_weights import deterministic_state_dict
    from nasjax.model.state_dict import reference_key_shapes

    shapes = reference_key_shapes(variant, "training", num_classes)
    return network_from_state_dict(deterministic_state_dict(shapes, seed, init), variant, form=form,
                                   class_names=class_names)
