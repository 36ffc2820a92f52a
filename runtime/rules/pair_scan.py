# cython: language_level=3, wraparound=False
# (bounds are checked: a damaged log entry whose columns differ in length raises IndexError)
"""The loop of the engine's "an event of one type, then one of another" kernel
(``PartitionEngine._pair``), over a batch's columns.

Installing ESP compiles this module with Cython (``setup.py``; ``pair_scan.pxd`` gives its C
types). Compiled, the loop takes about two thirds of the time: what remains is the dict lookups
and the loads of the events' objects. Where no C compiler is at hand the install goes on without
it and this file runs as plain Python, with the same results (``tests/unit/test_pair_scan.py``
checks that the two agree). After editing it, ``make setup`` compiles it again.
"""

import sys

COMPILED = not __file__.endswith(".py")  # this file itself runs where installing could not compile it


def scan(roles, kinds, customers, times, sources, source_of, ids, clocks, states, within):
    """Advance the rule's state over one batch and return its matches.

    ``roles`` gives, per type code of ``kinds``, 1 for the first step, 2 for the second and 0
    for types of no interest. ``clocks`` (customer → newest event time) and ``states``
    (customer → ``(time, source, id)`` of its newest first event) are updated in place. A
    match is ``(index, customer, time, [(source, id) of the first, (source, id) of the
    second])``, in batch order."""
    intern = sys.intern
    matched = []
    for index in range(len(customers)):
        role = roles[kinds[index]]
        if not role:
            continue
        customer = customers[index]
        # each time twice: ``time`` the object stored (no new int), ``t`` the C integer compared
        # (pair_scan.pxd); likewise ``seen`` and ``newest`` below. In Python they are one object
        time = times[index]
        t = time
        seen = clocks.get(customer)
        if seen is None:
            clocks[intern(customer)] = time
        else:
            newest = seen
            if t > newest:
                clocks[customer] = time
        old = states.get(customer)
        if role == 1:  # the newest start wins (an older start of a late event does not)
            if old is None:
                states[intern(customer)] = (time, sources[source_of[index]], ids[index])
            else:
                start = old[0]
                if start <= t:
                    states[customer] = (time, sources[source_of[index]], ids[index])
            continue
        if old is None:
            continue
        start = old[0]
        if t - start >= within:  # too late for it, and for any later second event
            del states[customer]
        elif start <= t:
            del states[customer]
            matched.append((index, customer, time, [old[1:], (sources[source_of[index]], ids[index])]))
    return matched
