"""The validator: a pure ledger core (``node.ledger``) and the adapters around it."""
