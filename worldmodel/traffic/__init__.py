"""The simulator core (numpy + OpenCV, no torch).

Modules: ``scenario`` (Scenario, load_scenario, resolve_scenario), ``road`` (Road), ``kinematics`` (step,
invert, invert_actions), ``drivers`` (the bot: DriverSettings, IDM, MOBIL, lane keeping), ``geometry``
(oriented boxes), ``vehicles`` (the simulator's vehicle array), ``occupancy`` (LaneOccupancy), ``inflow``
(Inflow), ``downstream`` (DownstreamSpeed), ``collisions`` (overlapping pairs, BandSweep, ContactMemory),
``lane_changes`` (the bots' MOBIL decisions, all at once), ``simulation`` (TrafficSimulation), ``stats``
(SectionStats), ``view`` (ViewSpec), ``raster`` (EgoRasterizer, render_topdown). A recording replayed as traffic is ``data.replay``: this
package imports nothing else of ``worldmodel``. Import what you need from the module; nothing runs here.
"""

__all__ = [
    "collisions",
    "downstream",
    "drivers",
    "geometry",
    "inflow",
    "kinematics",
    "lane_changes",
    "occupancy",
    "raster",
    "road",
    "scenario",
    "simulation",
    "stats",
    "vehicles",
    "view",
]
