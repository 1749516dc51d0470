"""The one strict base of every component's settings schema (strategies, model changes, ...).

A misspelled key is an error that names the key (`extra="forbid"`), and attribute docstrings become
the fields' descriptions, which error messages and `tunelab strategies` can show.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class NoSettings(StrictSettings):
    """A component without settings: any key is an error."""
