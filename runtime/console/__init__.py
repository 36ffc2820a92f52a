"""The operator console's pure parts: translations, session cookies, YAML error lines and the
overview's figures. The pages themselves are served by ``serve/console``."""
