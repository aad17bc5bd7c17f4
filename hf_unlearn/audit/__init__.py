"""The robustness audit: is the subgroup gone for every way of asking, and not one fine-tune away from coming back?

Every run ends with it (``--no_audit`` skips it); ``python -m hf_unlearn.audit`` runs it on its own. It attacks the
unlearned model, the original and, when given, a reference model that never saw the subgroup, with the same
attacks, and calls each attack ``forgotten`` or ``shallow``: against the reference where there is
one (within ``--audit_margin`` of its FA), else against the stated thresholds.

- ``attacks.py``: each attack, on a model it never changes;
- ``attack_data.py``: what the attacks read (the test set, an attacker's images and captions, the probe's rows);
- ``runner.py``: every attack on each model, cached for the original and the reference, and the distance moved;
- ``outcome.py``: the verdicts and what is printed and written to the card;
- ``phrasings.py`` / ``phrasings.txt``: the phrasing bank.

Nothing is imported here: ``python -m hf_unlearn.audit`` checks its flags before torch loads.
"""
