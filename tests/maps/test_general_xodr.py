"""The parser agrees with the client on features our generator does not use (laneOffset, varying widths)."""

from __future__ import annotations

import math

import carla

from envs.maps import RoadNetwork
from envs.maps.geometry import wrap_angle

_XODR = """<?xml version="1.0"?>
<OpenDRIVE><header revMajor="1" revMinor="5" name="general"><geoReference>+proj=tmerc</geoReference></header>
<road id="7" length="150" junction="-1">
 <planView>
  <geometry s="0" x="-20" y="30" hdg="2.5" length="50"><spiral curvStart="0" curvEnd="0.03"/></geometry>
  <geometry s="50" x="{x}" y="{y}" hdg="{h}" length="100"><arc curvature="0.03"/></geometry>
 </planView>
 <elevationProfile><elevation s="0" a="2" b="0.01" c="0.0002" d="0"/></elevationProfile>
 <lanes>
  <laneOffset s="0" a="0.5" b="0.01" c="0" d="0"/>
  <laneOffset s="80" a="1.3" b="0" c="0" d="0"/>
  <laneSection s="0">
   <left><lane id="1" type="driving"><width sOffset="0" a="3" b="0.01" c="0" d="0"/></lane></left>
   <center><lane id="0" type="none"/></center>
   <right>
    <lane id="-1" type="driving"><width sOffset="0" a="3.2" b="0" c="0" d="0"/>
      <width sOffset="30" a="3.2" b="0.02" c="-0.0003" d="0"/></lane>
    <lane id="-2" type="sidewalk"><width sOffset="0" a="2" b="0" c="0" d="0"/></lane>
   </right>
  </laneSection>
  <laneSection s="90">
   <left><lane id="1" type="driving"><width sOffset="0" a="3.5" b="0" c="0" d="0"/></lane></left>
   <center><lane id="0" type="none"/></center>
   <right><lane id="-1" type="driving"><width sOffset="0" a="3.5" b="0" c="0" d="0"/></lane></right>
  </laneSection>
 </lanes>
</road></OpenDRIVE>"""


def _spiral_end() -> tuple[float, float, float]:
    # The arc must start where the spiral ends: integrate the clothoid finely here, independently.
    n, length, k1 = 200000, 50.0, 0.03
    x, y = -20.0, 30.0
    du = length / n
    for i in range(n):
        u = (i + 0.5) * du
        h = 2.5 + 0.5 * k1 / length * u * u
        x += du * math.cos(h)
        y += du * math.sin(h)
    return x, y, 2.5 + 0.5 * k1 * length


def test_general_features_match_client() -> None:
    x, y, h = _spiral_end()
    text = _XODR.format(x=x, y=y, h=h)
    cmap = carla.Map("general", text)
    net = RoadNetwork.from_xodr(text, "general")
    waypoints = cmap.generate_waypoints(1.0)
    assert len(waypoints) > 200
    for w in waypoints:
        p = net.lane_pose(w.road_id, w.lane_id, w.s)
        loc = w.transform.location
        where = f"lane {w.lane_id} s={w.s:.2f}"
        assert math.hypot(p.x - loc.x, p.y - loc.y) < 0.05, where
        assert abs(p.z - loc.z) < 0.05, where
        assert abs(wrap_angle(p.yaw - w.transform.rotation.yaw)) < 1.0, where
        hit = net.locate(loc.x, loc.y)
        assert hit is not None and (hit.road_id, hit.lane_id) == (w.road_id, w.lane_id), where
