"""File-system mechanics, in one place: the domain modules (runs, report, demo, export) call them.

- :mod:`~longtail.fs.atomic`: atomic writes (a temporary sibling, fsync, rename), the one-line
  :class:`~longtail.errors.StorageError` of a failed write, the temporary files killed writers left.
- :mod:`~longtail.fs.locks`: an flock on a file in a directory, re-entrant in a process, with a record of
  who holds it.
- :mod:`~longtail.fs.staging`: build a directory's new contents beside it, then swap them into place by
  renames.
- :mod:`~longtail.fs.figure_file`: save a Matplotlib figure in the format its file name's suffix names
  (.png, .svg, .pdf), atomically.

Nothing is imported here: ``longtail.fs.locks`` does not load torch (``atomic`` does, for
:func:`~longtail.fs.atomic.save_torch_atomic`).
"""
