"""Declarative configuration: the registry of document kinds and parsing with error shaping
(``documents``), constrained types every document shares (``types``), and the versioned store
(``store``). Each kind's model lives with its concept (``runtime.rules.models``, ...)."""
