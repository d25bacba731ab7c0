"""One source for every default: the roles' defaults, their argument specs and the models.

Every roles/*/templates/*.toml.j2 is rendered from the role defaults and read
with the product's own loader; each key it writes must then hold the model's
default, unless the key is one a deployment decides (listed below, with why).
The argument specs must document each variable with the default the role
really uses, the model's choices, and a description that says more than its name.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from sendense_tools.config import parse_config
from sendense_tools.hub.config import HubConfig
from sendense_tools.node.config import NodeConfig
from sendense_tools.tunnel.config import TunnelConfig
from tests.fixtures import roles

NODE = {"id": "node-a", "user": "sdt-node-a", "reverse_port": 9081, "public_key": roles.HOST_KEY}

# Template -> (model, how the role's variables look when it renders it).
TEMPLATES: dict[str, tuple[type[BaseModel], Any]] = {
    "sendense_hub/templates/hub.toml.j2": (HubConfig, lambda: roles.hub_toml([NODE])),
    "sendense_node/templates/node.toml.j2": (
        NodeConfig,
        lambda: roles.render("sendense_node", "node.toml.j2", roles.node_variables()),
    ),
    "sendense_node/templates/tunnel.toml.j2": (
        TunnelConfig,
        lambda: roles.render("sendense_node", "tunnel.toml.j2", roles.node_variables()),
    ),
}

# Keys a deployment decides, so the role cannot take them from the model.
DEPLOYMENT_KEYS = {
    HubConfig: {
        # Each node must have its own token (a node without one would be admin).
        ("nodes", "node-a", "token_file"),
    },
    NodeConfig: {("node", "id")},  # from the inventory name
    # The hub's address, sdt-<node id>, and <hub socket_dir>/<node id>.
    TunnelConfig: {("hub", "host"), ("hub", "user"), ("forwards", "nbd_socket_dir")},
}

# `key = "{{ var }}"` or `key = {{ var | filter }}` in a template.
_LINE = re.compile(r'^(\w+) = "?[^{]*\{\{ *([\w.]+)')
_SECTION = re.compile(r"^\[([\w.-]+)\]")


def _flatten(data: dict, prefix: tuple = ()) -> dict[tuple, Any]:
    out: dict[tuple, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out


def _field(model: type[BaseModel], path: tuple) -> Any:
    """The pydantic FieldInfo at `path` (a dict table like [nodes.X] takes its value model)."""
    info = None
    current: Any = model
    for part in path:
        if isinstance(current, type) and issubclass(current, BaseModel):
            if part not in current.model_fields:
                # dict[str, Entry]: the part is a key of the table
                continue
            info = current.model_fields[part]
            current = info.annotation
            if typing.get_origin(current) is dict:
                current = typing.get_args(current)[1]
    return info


def _value_at(obj: Any, path: tuple) -> Any:
    for part in path:
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def _role_variable(template: str, path: tuple) -> str | None:
    """The role variable a template writes into `path` (section..., key)."""
    role = template.split("/", 1)[0]
    section: tuple = ()
    for line in (roles.ROLES / template).read_text().splitlines():
        if m := _SECTION.match(line):
            section = tuple(m.group(1).split("."))
            continue
        m = _LINE.match(line)
        if not m or (*section, m.group(1)) != path:
            continue
        expr = m.group(2)
        # The hub's templates read its published settings (sendense_hub_ctx.X = sendense_hub_X).
        if expr.startswith("sendense_hub_ctx."):
            return "sendense_hub_" + expr.split(".", 1)[1]
        if expr.startswith("sendense_node_hub_facts."):
            return "sendense_hub_" + expr.split(".", 1)[1]
        return expr if expr.startswith(f"{role}_") else None
    return None


def test_every_toml_template_is_checked():
    found = {str(p.relative_to(roles.ROLES)) for p in roles.ROLES.glob("*/templates/*.toml.j2")}
    assert found == set(TEMPLATES)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_template_renders_a_valid_config(template):
    model, render = TEMPLATES[template]
    text = render()
    parse_config(tomllib.loads(text), model, source=template)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_rendered_keys_hold_the_model_defaults(template):
    model, render = TEMPLATES[template]
    rendered = tomllib.loads(render())
    parsed = parse_config(rendered, model, source=template)
    defaults = model()
    wrong = []
    for path in _flatten(rendered):
        if path in DEPLOYMENT_KEYS[model]:
            continue
        got = _value_at(parsed, path)
        if path[0] == "nodes":  # a table per node: its entries default like NodeEntry's
            entry_model = typing.get_args(model.model_fields["nodes"].annotation)[1]
            want = entry_model.model_fields[path[-1]].default
        else:
            want = _value_at(defaults, path)
        if got != want:
            wrong.append(f"{'.'.join(path)} = {got!r}, the model's default is {want!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_choices_are_the_models(template):
    """A key the model restricts to a Literal gets the same choices in the argument spec."""
    model, render = TEMPLATES[template]
    checked = 0
    for path in _flatten(tomllib.loads(render())):
        info = _field(model, path)
        if info is None or typing.get_origin(info.annotation) is not typing.Literal:
            continue
        variable = _role_variable(template, path)
        assert variable, f"{'.'.join(path)}: no role variable found in {template}"
        owner = next(r for r in roles.ROLE_NAMES if variable.startswith(f"{r}_"))
        spec = roles.argument_specs(owner)[variable]
        assert spec.get("choices") == list(typing.get_args(info.annotation)), variable
        checked += 1
    # hub.toml: [nbd] listen, cache, aio, detect_zeroes; node.toml: [backup] transport;
    # tunnel.toml: [forwards] nbd_listen (the hub's).
    assert checked == {"hub": 4, "node": 1, "tunnel": 1}[Path(template).name.split(".")[0]]


@pytest.mark.parametrize("role", roles.ROLE_NAMES)
def test_argument_specs_document_every_default(role):
    defaults = roles.role_defaults(role)
    specs = roles.argument_specs(role)
    assert set(specs) == set(defaults), "variables and argument specs differ"
    wrong = {
        name: (spec.get("default"), defaults[name])
        for name, spec in specs.items()
        if "default" not in spec or spec["default"] != defaults[name]
    }
    assert not wrong, f"argument_specs default != defaults/main.yml: {wrong}"


@pytest.mark.parametrize("role", roles.ROLE_NAMES)
def test_descriptions_say_more_than_the_name(role):
    weak = []
    for name, spec in roles.argument_specs(role).items():
        words = re.findall(r"[a-z0-9]+", str(spec.get("description", "")).lower())
        name_words = name.removeprefix(f"{role}_").split("_")
        if len(words) < 5 or set(words) <= set(name_words):
            weak.append(f"{name}: {spec.get('description')!r}")
    assert not weak, "\n".join(weak)


@pytest.mark.parametrize("role", roles.ROLE_NAMES)
def test_ansible_doc_documents_the_role(role):
    """ansible-doc, the reader of these specs, shows each option with its default."""
    ansible_doc = Path(sys.executable).with_name("ansible-doc")
    out = subprocess.run(
        [str(ansible_doc), "-t", "role", "-r", str(roles.ROLES), "--json", role],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    options = json.loads(out)[role]["entry_points"]["main"]["options"]
    defaults = roles.role_defaults(role)
    assert {k: v.get("default") for k, v in options.items()} == defaults
