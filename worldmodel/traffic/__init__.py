"""The simulator core (numpy + OpenCV, no torch).

Modules: ``scenario`` (Scenario, load_scenario, resolve_scenario), ``road`` (Road), ``kinematics`` (step,
invert), ``drivers`` (IDM, MOBIL, lateral control), ``geometry`` (oriented boxes), ``simulation``
(TrafficSimulation), ``stats`` (SectionStats), ``view`` (ViewSpec), ``raster`` (EgoRasterizer,
render_topdown), ``replay`` (ReplaySimulation). Import what you need from the module; nothing runs here.
"""

__all__ = ["drivers", "geometry", "kinematics", "raster", "replay", "road", "scenario", "simulation", "stats", "view"]
