"""Name -> builder registries with one error format for an unknown name.

Every registry of the project (backbones, pooling modes, learning-rate modes, distance metrics,
CMC protocols, datasets) is a ``Registry``: a plain dict whose look-up of an unknown name raises
``UnknownNameError``, a ``ValueError`` naming the argument and listing the valid names in
registration order. Nothing here imports TensorFlow, so NumPy-only packages can use it.
"""


class UnknownNameError(ValueError, KeyError):
    """An unknown registry name; a ValueError for callers, a KeyError for dict idioms."""

    def __str__(self):
        # KeyError would quote the message; this keeps it readable.
        return str(self.args[0])


class Registry(dict):
    """A dict from names to builders whose unknown-name error lists the valid names.

    Example:
        POOLING_LAYER_BUILDERS = Registry("pooling_mode", {"Average": ..., "GeM": ...})
        POOLING_LAYER_BUILDERS["Mean"]
        # UnknownNameError: Unknown pooling_mode 'Mean'; valid names: Average, GeM.
    """

    def __init__(self, argument_name, entries=(), /):
        """Initialises the registry.

        Args:
            argument_name: str, what the names are, as the error should say it: the argument
                or flag name ("pooling_mode") or a plain phrase ("distance metric").
            entries: mapping or iterable of (name, builder) pairs, in the order to list them.
        """
        super().__init__(entries)
        self.argument_name = argument_name

    def __getitem__(self, name):
        try:
            return super().__getitem__(name)
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise UnknownNameError(self.unknown_name_message(name)) from None

    def unknown_name_message(self, name):
        """The error text for an unknown name.

        Args:
            name: the name that was not found.

        Returns:
            str, e.g. "Unknown pooling_mode 'Mean'; valid names: Average, Max, GeM."
        """
        return f"Unknown {self.argument_name} {name!r}; valid names: {', '.join(self)}."

    def names(self):
        """The registered names, in registration order.

        Returns:
            tuple of str.
        """
        return tuple(self)
