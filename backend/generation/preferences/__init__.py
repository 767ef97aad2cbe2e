"""Preference data made by models: AI feedback (a judge labels answer pairs) and Constitutional AI
(a model critiques and revises its own answers against written principles).

Both are generation jobs run by ``backend.generation.preferences.worker`` in a process of their
own, resumable from an append-only partial file, and both end in an ordinary preference file
(prompt, chosen, rejected, plus why each pair exists) that the Data panel opens for preference
training. The modules:

- ``request``: what a job is asked to do, checked without loading anything;
- ``inputs``: the rows of the input file (pairs, two answer columns, or prompts only);
- ``judging``: the pairwise judge, asked in both orders;
- ``constitution``: the principles, their file, and the critique/revision conversation;
- ``partial_file``: the append-only progress file and the atomic final write;
- ``jobs``: the two job loops, with the models passed in (so logic tests can pass fakes);
- ``local_model``: a studio-loadable model behind the generation engine (imports torch);
- ``events``, ``worker``, ``job_run``: the worker process, its events, and starting it.

Nothing here but ``local_model`` and ``worker`` imports torch.
"""
