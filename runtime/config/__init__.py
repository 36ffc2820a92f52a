"""Declarative configuration: pydantic documents (``models``), parsing and error shaping
(``documents``), and the versioned store (``store``)."""
