"""The ``crio-py`` client commands: thin CRI clients of a running daemon, in crictl's spirit.

``status`` prints the daemon's version and conditions; ``pods``, ``ps``, ``images``, ``pull``,
``runp``, ``create``, ``start``, ``stop``, ``rm``, ``stopp``, ``rmp``, ``exec``, ``logs``,
``inspect`` and ``inspectp`` do what crictl's commands of the same names do, read the same JSON
and YAML files and print the same tables (or ``-o json|yaml``).
"""
