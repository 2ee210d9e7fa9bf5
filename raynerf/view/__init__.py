"""``raynerf view``: a web viewer of a trained scene (viser), with a camera-path editor.

:mod:`raynerf.view.frames` renders what a browser's camera sees, at a size that keeps
the viewer responsive; :mod:`raynerf.view.server` connects it to viser's web page.
"""
