"""The layer views' templates (ingest/storing/views) and the migration rendered from them."""

from __future__ import annotations

import pytest

from ingest.storing.views import load_templates, render, resolve, target


def test_the_migration_is_what_the_templates_render():
    # (python -m ingest.storing.views writes it)
    assert target().read_text() == render()


def test_every_template_names_the_layers_it_serves_and_has_a_doc():
    for t in load_templates().values():
        assert t.layers and t.doc.startswith("--"), t.name


def test_a_reference_becomes_the_plain_view_of_its_mode():
    assert resolve("FROM pbx.call_visits(layer = 'calls', refresh = 0, whole = 1)") == "FROM pbx.call_visits_all"
    assert resolve("FROM pbx.call_visits(layer = 'calls', refresh = 1, whole = 0)") == "FROM pbx.call_visits_refresh"
    assert resolve("FROM pbx.arrivals_from(layer = 'agents', refresh = 0)") == "FROM pbx.arrivals_from_agents_live"
    assert resolve("FROM pbx.events") == "FROM pbx.events"


def test_a_layer_a_template_does_not_serve_is_an_error():
    with pytest.raises(ValueError, match="does not serve layer"):
        resolve("FROM pbx.call_visits(layer = 'agents', refresh = 0, whole = 0)")
