"""The eight toy Physion scenarios as 2D pymunk worlds (the simulation loop is in `physion.py`).

Physion (Bear et al., 2021, "Physion: Evaluating Physical Prediction from Vision in Humans and
Machines", NeurIPS Datasets & Benchmarks, arXiv:2106.08261) shows short 3D videos of eight kinds of
physical event and asks one question: does the red *agent* object touch the yellow *patient* object
at some point (Object Contact Prediction)? Here every scenario is a small 2D side-view analogue built
with the Chipmunk2D engine through pymunk, so collisions, friction, stacking and joints come from a
real rigid-body solver, and the contact label comes from the engine's collision callbacks.

World conventions (rendering and pixel units live in `toy_data/physion.py`):
- world units, x to the right, y *up*, floor top at `FLOOR`; 1 unit ~ 3 cm, so `GRAVITY` =
  9.81 m/s^2 = 327 units/s^2; each scenario sets a fixed square camera `view` = (left, side), whose
  bottom edge is `FLOOR - FLOOR_MARGIN * side`, framed to fit its layout;
- video frames are sampled at `SIM_FPS` = 30 Hz (Physion's frame rate) with `SUBSTEPS` fixed physics
  steps per frame; a clip keeps every `frame_stride`-th frame;
- object 0 is the agent, object 1 the patient, then every other dynamic body.

Balanced labels: a clip first draws its target label (contact or not, 50/50) from its own
`numpy.random.default_rng([scenario_id, seed])`, the scenario builder turns the target into initial
conditions (aim at or away from the patient, put the patient in or out of reach, ...), the engine
runs (`toy_data.physion.simulate`), and if the outcome disagrees the builder draws new conditions
from the same generator (at most `MAX_TRIES` times). A clip is therefore a pure function of
(scenario, seed, parameters).
"""
import math

import pymunk

SCENARIOS = ("dominoes", "support", "collide", "contain", "drop", "link", "roll", "drape")

# Physion's model-facing videos colour the agent red and the patient yellow; everything else here is
# blue, green, cyan or grey (R never above both G and B, so no red or yellow hue appears).
AGENT_RGB = (0.90, 0.10, 0.10)
PATIENT_RGB = (0.95, 0.85, 0.10)
BACKGROUND_RGB = (0.08, 0.08, 0.10)
STATIC_RGB = (0.36, 0.38, 0.44)  # floor, ramps, stands
OTHER_RGBS = ((0.20, 0.45, 0.90), (0.15, 0.65, 0.45), (0.30, 0.75, 0.80),
              (0.60, 0.65, 0.75), (0.35, 0.45, 0.65), (0.40, 0.80, 0.50))

WORLD = 100.0
FLOOR = 10.0
FLOOR_MARGIN = 0.08  # fraction of the view below the floor top
GRAVITY = 327.0
SIM_FPS = 30
SUBSTEPS = 4
ITERATIONS = 30
MAX_TRIES = 12
DISC, BOX, COMPOUND = 0, 1, 2  # object kinds
AGENT_TYPE, PATIENT_TYPE = 1, 2  # pymunk collision types


class Scene:
    """A pymunk space plus the shapes to draw (in drawing order) and the dynamic bodies to track."""

    def __init__(self, rng):
        self.rng = rng
        self.space = pymunk.Space()
        self.space.gravity = (0.0, -GRAVITY)
        self.space.iterations = ITERATIONS  # explicit: the result depends on it
        self.items = []  # (shape, rgb)
        self.view = (0.0, WORLD)  # camera: x of the left edge and side of the square, world units
        self.objects = []  # (role, body, kind, (w, h)) with role "agent", "patient" or None

    def other_rgb(self):
        return OTHER_RGBS[self.rng.integers(len(OTHER_RGBS))]

    def _add(self, body, shapes, rgb, role, friction, elasticity, kind, size, group):
        for s in shapes:
            s.friction, s.elasticity = friction, elasticity
            s.collision_type = {"agent": AGENT_TYPE, "patient": PATIENT_TYPE}.get(role, 0)
            if group:
                s.filter = pymunk.ShapeFilter(group=group)  # shapes of one group never collide
        self.space.add(body, *shapes)
        self.items += [(s, rgb) for s in shapes]
        if body.body_type == pymunk.Body.DYNAMIC:
            self.objects.append((role, body, kind, size))
        return body

    def _body(self, x, y, angle, static):
        body = pymunk.Body(body_type=pymunk.Body.STATIC) if static else pymunk.Body()
        body.position, body.angle = (x, y), angle
        return body

    def box(self, x, y, w, h, rgb, role=None, density=1.0, friction=0.6, elasticity=0.1,
            angle=0.0, static=False, group=0):
        body = self._body(x, y, angle, static)
        shape = pymunk.Poly.create_box(body, (w, h))
        if not static:
            shape.density = density
        return self._add(body, [shape], rgb, role, friction, elasticity, BOX, (w, h), group)

    def ball(self, x, y, r, rgb, role=None, density=1.0, friction=0.6, elasticity=0.2, group=0):
        body = self._body(x, y, 0.0, False)
        shape = pymunk.Circle(body, r)
        shape.density = density
        return self._add(body, [shape], rgb, role, friction, elasticity, DISC, (2 * r, 2 * r), group)

    def boxes(self, x, y, parts, rgb, density=1.0, friction=0.6, elasticity=0.1):
        """One dynamic body made of several boxes; parts = [(cx, cy, w, h)] in body coordinates."""
        body = self._body(x, y, 0.0, False)
        shapes = [pymunk.Poly(body, [(cx + sx * w / 2, cy + sy * h / 2) for sx, sy in
                                     ((-1, -1), (1, -1), (1, 1), (-1, 1))]) for cx, cy, w, h in parts]
        for s in shapes:
            s.density = density
        xs = [c for cx, _, w, _ in parts for c in (cx - w / 2, cx + w / 2)]
        ys = [c for _, cy, _, h in parts for c in (cy - h / 2, cy + h / 2)]
        size = (max(xs) - min(xs), max(ys) - min(ys))
        return self._add(body, shapes, rgb, None, friction, elasticity, COMPOUND, size, 0)

    def polygon(self, vertices, friction=0.6, rgb=STATIC_RGB):
        """A static convex polygon in world coordinates (ramps, supports)."""
        body = self._body(0.0, 0.0, 0.0, True)
        shape = pymunk.Poly(body, vertices)
        return self._add(body, [shape], rgb, None, friction, 0.1, BOX, (0, 0), 0)

    def floor(self, friction):
        return self.polygon([(-300, -300), (400, -300), (400, FLOOR), (-300, FLOOR)], friction)


def _pin(scene, a, b, point, stiffness=0.0):
    """Pin bodies a and b together at a world point; optional damped bending spring (cloth)."""
    scene.space.add(pymunk.PivotJoint(a, b, point))
    if stiffness:
        scene.space.add(pymunk.DampedRotarySpring(a, b, b.angle - a.angle, stiffness, stiffness / 20))


def _chain(scene, start, step, n, width, rgb, density, group, stiffness=0.0, anchor=None):
    """n box links from `start` along the vector `step` (one link length), pinned end to end."""
    (x0, y0), (dx, dy) = start, step
    angle, length, links = math.atan2(dy, dx), math.hypot(dx, dy), []
    for i in range(n):
        link = scene.box(x0 + (i + 0.5) * dx, y0 + (i + 0.5) * dy, length, width, rgb,
                         density=density, friction=0.9, angle=angle, group=group)
        if links or anchor is not None:
            _pin(scene, links[-1] if links else anchor, link, (x0 + i * dx, y0 + i * dy), stiffness)
        links.append(link)
    return links


# ----------------------------------------------------------------------------------------------
# Scenario builders: builder(scene, rng, want, duration) fills the scene so that the agent touches
# the patient within `duration` seconds if `want` is True and does not otherwise (the engine checks).
# ----------------------------------------------------------------------------------------------

def _toss_time(y0, vy, y1):
    """Time for a body thrown upwards at vy from height y0 to fall to height y1."""
    return (vy + math.sqrt(vy * vy + 2 * GRAVITY * max(y0 - y1, 0.5))) / GRAVITY


def dominoes(sc, rng, want, dur):
    """Dominoes. Physion: a probe domino is pushed into a row of dominoes; does the chain reach the
    yellow target zone? (Physion's red object is the *last* domino of the chain.) 2D analogue: a
    blue probe domino gets a push, the row falls (or stops at a too-wide gap) and the red last
    domino topples onto the yellow tile on the floor, or falls short of it."""
    u = rng.uniform
    sc.floor(friction=u(0.5, 0.9))
    sc.view = (0.0, 86.0)
    n, h, w, x = int(rng.integers(3, 5)), u(12, 16), u(3, 4), u(5, 10)
    gap_at = int(rng.integers(1, n)) if not want and rng.random() < 0.5 else -1
    for i in range(n):
        if i:
            x += w + h * (u(1.05, 1.2) if i == gap_at else u(0.3, 0.55))
        hi = h * u(0.9, 1.1)
        body = sc.box(x, FLOOR + hi / 2, w, hi, AGENT_RGB if i == n - 1 else sc.other_rgb(),
                      role="agent" if i == n - 1 else None, density=u(0.5, 2), friction=u(0.4, 0.8))
        if i == 0:
            body.angular_velocity = -u(2.5, 4.5)  # the push: tip forward (clockwise, y up)
            body.velocity = (-body.angular_velocity * hi / 2, 0.0)
    reach = hi * (u(0.05, 0.6) if want or gap_at > 0 else u(1.1, 1.3))
    tw, th = u(8, 12), u(3, 4.5)
    sc.box(x + w / 2 + reach + tw / 2, FLOOR + th / 2, tw, th, PATIENT_RGB, role="patient",
           density=u(0.5, 2))


def support(sc, rng, want, dur):
    """Support. Physion ('towers'): a tower of blocks with a red cap may fall onto a yellow zone,
    so the question is about support relations and stability. 2D analogue: a stack of 2-3 blocks,
    each shifted sideways ('lean') on the one below, red cap on top, yellow tile on the floor.
    A large lean topples the stack towards the lean side and a small lean stands: contact iff the
    tower falls towards the tile (the tile sits on the lean side, or on the other side of a tower
    that falls away from it)."""
    u = rng.uniform
    sc.floor(friction=u(0.5, 0.9))
    sc.view = (0.0, 70.0)
    away = not want and rng.random() < 0.3
    lean = u(0.3, 0.6) if want or away else u(-0.25, 0.2)
    blocks = [(u(18, 26), FLOOR, u(7, 13), u(5, 9))]  # (x, bottom, w, h), bottom block first
    for _ in range(int(rng.integers(1, 3))):
        x, y, w, h = blocks[-1]
        blocks.append((x + lean * w * u(0.8, 1.2), y + h, u(7, 13), u(5, 9)))
    for x, y, w, h in blocks:
        sc.box(x, y + h / 2, w, h, sc.other_rgb(), density=u(0.5, 2), friction=u(0.5, 0.9))
    x, y, w, h = blocks[-1]
    x, y, wc, hc = x + lean * w * u(0.8, 1.2), y + h, u(6, 9), u(4, 6)
    sc.box(x, y + hc / 2, wc, hc, AGENT_RGB, role="agent", density=u(0.5, 2), friction=u(0.5, 0.9))
    tw, th, d = u(10, 15), u(3, 4.5), (y + hc - FLOOR) * u(0.0, 0.5)
    (xb, _, wb, _), right = blocks[0], max(b[0] + b[2] / 2 for b in blocks)
    tx = xb - wb / 2 - d - tw / 2 if away else right + d + tw / 2
    sc.box(tx, FLOOR + th / 2, tw, th, PATIENT_RGB, role="patient", density=u(0.5, 2))


def collide(sc, rng, want, dur):
    """Collide (the default experiment, as in VDT). Physion ('collision'): a probe object is
    launched towards a target; do they touch? 2D analogue on a floor: the red agent, a rolling
    disc or a sliding box, is launched towards the yellow patient. A disc rolls at constant speed,
    so it arrives iff speed * clip length > gap; a box decelerates by friction, so it arrives iff
    its stopping distance exceeds the gap. Arrivals are placed in the second half of the clip, so
    the first frames show the approach and the last frames the outcome."""
    u = rng.uniform
    floor_mu = u(0.3, 0.9)
    sc.floor(friction=floor_mu)
    sc.view = (0.0, 72.0)
    xa, gap = u(6, 12), u(16, 34)
    t_hit = dur * (u(0.52, 0.9) if want else u(1.2, 1.8))
    if rng.random() < 0.5:  # rolling disc: no slip from the start, constant speed
        r = u(4.5, 7)
        agent = sc.ball(xa, FLOOR + r, r, AGENT_RGB, role="agent", density=u(0.5, 2),
                        friction=u(0.3, 0.9))
        v, front = gap / t_hit, xa + r
        agent.angular_velocity = -v / r
    else:  # sliding box, deceleration a = mu * g with mu = mu_box * mu_floor (pymunk multiplies)
        s = u(8, 12)
        a = min(u(0.05, 0.5) * floor_mu * GRAVITY, 1.5 * gap / t_hit ** 2)
        v = gap / t_hit + a * t_hit / 2 if want else math.sqrt(2 * a * gap * u(0.35, 0.85))
        agent = sc.box(xa, FLOOR + s / 2, s, s, AGENT_RGB, role="agent", density=u(0.5, 2),
                       friction=a / (floor_mu * GRAVITY))
        front = xa + s / 2
    agent.velocity = (v, 0.0)
    if rng.random() < 0.5:
        r = u(5, 8)
        sc.ball(front + gap + r, FLOOR + r, r, PATIENT_RGB, role="patient", density=u(0.5, 2))
    else:
        pw, ph = u(8, 14), u(8, 20)
        sc.box(front + gap + pw / 2, FLOOR + ph / 2, pw, ph, PATIENT_RGB, role="patient",
               density=u(0.5, 2))


def contain(sc, rng, want, dur):
    """Contain. Physion ('containment'): an object and distractors are dropped near a container;
    does the red object end up touching the yellow one? 2D analogue: a cup (one rigid body of three
    boxes) holds the yellow ball; the red agent is tossed up and falls, with a sideways drift,
    either into the cup (where it must touch the ball) or beside it; sometimes a blue distractor
    falls too."""
    u = rng.uniform
    sc.floor(friction=u(0.5, 0.9))
    sc.view = (0.0, 70.0)
    wi, hw, t, cx = u(13, 20), u(9, 14), 2.0, u(25, 45)
    cup = [(0, t / 2, wi + 2 * t, t), (-(wi + t) / 2, hw / 2, t, hw), ((wi + t) / 2, hw / 2, t, hw)]
    sc.boxes(cx, FLOOR, cup, sc.other_rgb(), density=u(2, 4), friction=0.8)
    rp, ra = wi * u(0.3, 0.4), u(2.5, 4)
    sc.ball(cx + u(-1, 1) * (wi / 2 - rp), FLOOR + t + rp, rp, PATIENT_RGB, role="patient",
            density=u(0.5, 2))
    side = rng.choice([-1.0, 1.0])
    x_land = cx + (u(-1, 1) * (wi / 2 - ra - 0.5) if want else side * (wi / 2 + t + ra + u(1.5, 14)))
    y0, vx, vy = u(45, 62), u(-8, 8), u(20, 70)
    x0 = x_land - vx * _toss_time(y0, vy, FLOOR + hw)
    kw = dict(role="agent", density=u(0.5, 2), friction=u(0.3, 0.9))
    agent = (sc.ball(x0, y0, ra, AGENT_RGB, **kw) if rng.random() < 0.5 else
             sc.box(x0, y0, 2 * ra, 2 * ra, AGENT_RGB, angle=u(0, 3), **kw))
    agent.velocity = (vx, vy)
    if rng.random() < 0.5:
        sc.ball(cx - side * u(12, 22), u(35, 60), u(2.5, 4), sc.other_rgb(), density=u(0.5, 2))


def drop(sc, rng, want, dur):
    """Drop. Physion ('drop'): an object is dropped onto (or next to) a target object. 2D analogue:
    the red agent is tossed up from a random height with a sideways drift and falls; it lands on
    the yellow patient, or lands beside it and drifts away."""
    u = rng.uniform
    sc.floor(friction=u(0.5, 0.9))
    sc.view = (0.0, 70.0)
    xp = u(25, 45)
    if rng.random() < 0.5:
        half = u(4, 8)
        top = FLOOR + 2 * half
        sc.ball(xp, FLOOR + half, half, PATIENT_RGB, role="patient", density=u(0.5, 2))
    else:
        half, h = u(4, 10), u(5, 14)
        top = FLOOR + h
        sc.box(xp, FLOOR + h / 2, 2 * half, h, PATIENT_RGB, role="patient", density=u(0.5, 2))
    ra, y0, vy, side = u(3, 6), u(45, 62), u(20, 70), rng.choice([-1.0, 1.0])
    if want:
        x_land, vx = xp + u(-0.8, 0.8) * half, u(-10, 10)
    else:
        x_land, vx = xp + side * (half + ra + u(2, 15)), side * u(0, 10)
    kw = dict(role="agent", density=u(0.5, 2), friction=u(0.3, 0.9), elasticity=u(0.1, 0.5))
    x0 = x_land - vx * _toss_time(y0, vy, top + ra)
    agent = (sc.ball(x0, y0, ra, AGENT_RGB, **kw) if rng.random() < 0.5 else
             sc.box(x0, y0, 2 * ra, 2 * ra * u(0.6, 1), AGENT_RGB, **kw))
    agent.velocity = (vx, vy)


def link(sc, rng, want, dur):
    """Link. Physion ('linking'): linked objects move together (a stack of links on a pole is hit);
    understanding a link means predicting where the attached object goes. 2D analogue: a chain of
    links (pymunk pivot joints) hangs from a grey arm, released from a sideways angle; the red agent
    is the weight at its end. The chain cannot stretch, so the yellow patient is touched iff it lies
    within the chain's reach along the swing."""
    u = rng.uniform
    sc.floor(friction=u(0.5, 0.9))
    sc.view = (0.0, 72.0)
    px, py, n = u(30, 40), u(50, 62), int(rng.integers(3, 6))
    ll, rb, phi, group = u(0.55, 0.85) * (py - FLOOR - 8) / n, u(3, 5), u(0.7, 1.2), 1
    arm = sc.box(px + 40, py + 1.5, 80, 3, STATIC_RGB, static=True, group=group)
    step = (-math.sin(phi) * ll, -math.cos(phi) * ll)
    links = _chain(sc, (px, py), step, n, 2.0, sc.other_rgb(), u(0.5, 2), group, anchor=arm)
    reach, end = n * ll + 2 * rb, (px + n * step[0], py + n * step[1])
    bob = sc.ball(end[0] - rb * math.sin(phi), end[1] - rb * math.cos(phi), rb, AGENT_RGB,
                  role="agent", density=u(1, 3), group=group)
    _pin(sc, links[-1], bob, end)
    omega = u(0, 2.5)  # a push backwards first (away from the patient): the swing comes later
    for b in links + [bob]:
        b.velocity = (omega * (b.position.y - py), -omega * (b.position.x - px))
    psi = u(-0.15, 0.55) * phi  # patient's top-left corner at angle psi right of straight down
    rho = reach - u(1.5, 6) if want else reach + u(2, 10)
    cx, cy = px + rho * math.sin(psi), py - rho * math.cos(psi)
    pw, ph = u(6, 12), max(cy - FLOOR, 3.0)
    sc.box(cx + pw / 2, FLOOR + ph / 2, pw, ph, PATIENT_RGB, role="patient", density=u(2, 4))


def roll(sc, rng, want, dur):
    """Roll. Physion ('rollingsliding'): an object rolls or slides down a ramp towards a target.
    2D analogue: the red agent (a disc that rolls, or a box that slides) starts on a grey ramp;
    the yellow patient waits on the floor. The patient is placed where the agent arrives in the
    second half of the clip (contact), or further than the agent gets within the clip (none)."""
    u = rng.uniform
    floor_mu = u(0.3, 0.9)
    sc.floor(friction=floor_mu)
    sc.view = (0.0, 80.0)
    theta, base = u(0.35, 0.65), u(18, 28)
    hr, ramp_mu = base * math.tan(theta), u(0.3, 0.9)
    sc.polygon([(-300, FLOOR), (base, FLOOR), (0, FLOOR + hr), (-300, FLOOR + hr)], ramp_mu)
    f = u(0.05, 0.4) if want else u(0.3, 0.8)  # start position: fraction of the way down
    s, sn, cs = u(3.5, 5.5), math.sin(theta), math.cos(theta)
    x0, y0 = f * base + s * sn, FLOOR + hr * (1 - f) + s * cs
    run = (1 - f) * math.hypot(base, hr)
    kw = dict(role="agent", density=u(0.5, 2))
    if rng.random() < 0.5:  # rolling disc: a = (2/3) g sin(theta), no loss on the floor
        sc.ball(x0, y0, s, AGENT_RGB, friction=u(0.5, 0.9), **kw)
        a, a_floor = 2 / 3 * GRAVITY * sn, 0.0
    else:  # sliding box: friction below tan(theta) so it slides, then stops on the floor
        mu = u(0.1, 0.6) * math.tan(theta)
        sc.box(x0, y0, 2 * s, 2 * s, AGENT_RGB, angle=-theta, friction=mu / ramp_mu, **kw)
        a, a_floor = GRAVITY * (sn - mu * cs), mu / ramp_mu * floor_mu * GRAVITY
    t1 = math.sqrt(2 * run / a)
    v1 = a * t1 * cs  # the kink at the ramp's foot keeps roughly the horizontal part
    t_stop = v1 / a_floor if a_floor else math.inf
    t2 = min(dur * (u(0.45, 0.85) if want else u(1.2, 1.8)) - t1, t_stop)
    d = max(v1 * t2 - a_floor * t2 ** 2 / 2, 1.0)
    d = min(d if want or t2 < t_stop else d * u(1.2, 2.0), 38.0)
    pw, ph = u(6, 12), u(6, 18)
    sc.box(base + s + d + pw / 2, FLOOR + ph / 2, pw, ph, PATIENT_RGB, role="patient",
           density=u(0.5, 2))


def drape(sc, rng, want, dur):
    """Drape. Physion ('clothiness'): a cloth falls over objects; does it touch the yellow zone?
    2D analogue: a cloth (a chain of short links with damped bending springs) falls across a grey
    block; its red hem is the agent. The overhanging part swings down around the block's edge and
    cannot stretch, so the hem touches the yellow patient beside the block iff the overhang is
    longer than the distance from the block's top corner to the patient's nearest corner."""
    u = rng.uniform
    sc.floor(friction=u(0.6, 1.0))
    sc.view = (0.0, 76.0)
    ws, hs, xs = u(6, 12), u(14, 24), u(34, 40)
    sc.box(xs, FLOOR + hs / 2, ws, hs, STATIC_RGB, static=True, friction=1.0)
    pw, ph, gap = u(6, 12), u(5, 10), u(0, 12)
    dist = math.hypot(gap, hs - ph)  # block corner to the patient's top-left corner
    over = max(dist + u(3, 9) if want else dist - u(4, 9), 3.0)
    sc.box(xs + ws / 2 + gap + pw / 2, FLOOR + ph / 2, pw, ph, PATIENT_RGB, role="patient",
           density=u(1, 3))
    lc, y, x_end = u(2.6, 3.2), FLOOR + hs + u(10, 20), xs + ws / 2 + over
    n = int(round((ws + over * u(2.0, 2.3)) / lc))  # the left part is longer: it holds the cloth
    links = _chain(sc, (x_end - n * lc, y), (lc, 0.0), n, 2.0, sc.other_rgb(), u(0.5, 1.5), 1,
                   stiffness=u(200, 800))
    rh = u(2.5, 3.2)
    hem = sc.ball(x_end + rh, y, rh, AGENT_RGB, role="agent", density=u(0.4, 0.8), friction=0.9,
                  group=1)
    _pin(sc, links[-1], hem, (x_end, y))


BUILDERS = dict(dominoes=dominoes, support=support, collide=collide, contain=contain, drop=drop,
                link=link, roll=roll, drape=drape)
