"""Driving (SPEC §8-9): the ego's exact kinematics in torch, the driving objective with named terms, costs at
any ego pose read from world frames predicted along a reference, world providers (oracle / constant velocity
/ learned model), planners that optimise actions through the kinematics, and the drivers that use them.

Modules: ``kinematics`` (torch twin of ``traffic.kinematics``), ``pose_costs`` (masks moved to the ego's
pose), ``objective`` (presets ``drive`` and ``ppuu``), ``worlds`` (world providers), ``planners`` (gradient
MPC, CEM), ``planner_driver`` (the lockstep driver ``plan:grad`` / ``plan:cem``).
"""
