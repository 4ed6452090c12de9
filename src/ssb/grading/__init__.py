"""Correct or wrong: ``grade.py`` is the one place that decides (``grade``, ``same_answer``);
``answers.py`` extracts answers from text; ``workers.py`` runs math-verify and reasoning-gym
scorers in worker processes, bounded in time and memory.
"""
