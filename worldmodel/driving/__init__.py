"""Driving (SPEC §8-9): the ego's exact kinematics in torch, the driving objective with named terms, costs at
any ego pose read from world frames predicted along a reference, world providers (oracle / constant velocity
/ learned model), planners that optimise actions through the kinematics, and the drivers that use them.

Modules: ``kinematics`` (torch twin of ``traffic.kinematics``), ``pose_costs`` (masks moved to the ego's
pose), ``objective`` (presets ``drive`` and ``ppuu``), ``worlds`` (world providers), ``planners`` (gradient
MPC, CEM), ``planner_driver`` (the lockstep driver ``plan:grad`` / ``plan:cem``), ``lane_plans``,
``uncertainty``, ``model_world``, ``world_error`` (how far each world provider is from the truth).
The environments: ``envs`` (TrafficEnv, ReplayEnv; importing it registers them with gymnasium),
``imagination`` (policy rollouts through the forward model). The closed-loop evaluation harness:
``closed_loop`` (evaluate_driving), ``closed_loop_config`` (EvalPolicyConfig), ``driver_protocol``,
``drivers`` (bot, replay, constant), ``model_drivers`` (policies and planners from checkpoints),
``episode_selection``, ``episode_workers``, ``episode_runner``, ``episode_summary``.
"""
