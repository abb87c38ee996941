"""Broken STL files from a generator that is not ours, and a judge for their repairs.

The healer's own tests break models made by its own generator (`heal::generate`). This
script makes models with trimesh's `creation` module (spheres with pole fans, a capsule, a
cone, discs and tubes whose caps are fans of long thin facets, a torus, an assembly with a
cavity, a plate with small letters written as bodies of their own, a block with small
voids), two blocks written whole that share a face, parts a small clearance apart (two
blocks side by side, three plates stacked; with cracks, and with a stray facet far away),
solids whose faces were meshed apart (every seam a row of T-junctions), and bodies that touch
along a face meshed differently on each side (two blocks, two stacked cylinders), plates whose
top face, a face with holes and a pin, is missing, and breaks them
with its own code: per-facet vertex copies with noise, flipped, missing, duplicated and
degenerate facets (repeated corners, and slivers whose middle corner lies on the opposite
edge), debris, shuffled facets, T-junctions (a facet split at the middle of an edge whose
other facet is not, with or without the zero-area facet that closes the crack), ASCII files
and binary files whose header starts with `solid`, as CAD exporters write; it also squashes
the clean models along one axis, moves them far out along one axis and mirrors them, written
exactly.

    python foreign_models.py make OUT_DIR        # writes OUT_DIR/*.stl and manifest.json
    python foreign_models.py judge MANIFEST DIR  # judges DIR/<name>.stl for every case

`judge` prints one JSON object per case with trimesh's verdict next to what the clean model
had (volume, number of bodies); the Rust test decides what passes.
"""

import json
import os
import struct
import sys

import numpy as np
import trimesh
from trimesh import creation


# The models whose parts lie a small clearance apart (see `clean_models`).
CLEARANCE = ("blocks_clearance", "plates_stacked")


def clean_models():
    """The clean models: (name, mesh). Each is watertight and wound outward."""
    models = []
    # A CAD block: 12 facets, axis-aligned, so a point halfway along an edge is exact.
    models.append(("block", creation.box(extents=[40.0, 30.0, 20.0])))
    models.append(("icosphere", creation.icosphere(subdivisions=4, radius=10.0)))
    models.append(("uv_sphere", creation.uv_sphere(radius=10.0, count=[64, 64])))
    models.append(("capsule", creation.capsule(height=30.0, radius=5.0, count=[64, 64])))
    models.append(("cone", creation.cone(radius=6.0, height=25.0, sections=400)))
    # A thin disc: its caps are fans of 512 needles from the centre, 8 long and 0.1 wide.
    models.append(("disc", creation.cylinder(radius=8.0, height=1.5, sections=512)))
    # A tube with a thin wall: the caps are long strips of thin facets.
    models.append(("tube", creation.annulus(r_min=5.0, r_max=5.6, height=40.0, sections=300)))
    models.append(
        (
            "torus",
            creation.torus(major_radius=20.0, minor_radius=2.0, major_sections=128, minor_sections=24),
        )
    )
    # A box with a spherical cavity (wound inward) and a separate cylinder beside it.
    box = creation.box(extents=[40.0, 30.0, 20.0])
    cavity = creation.icosphere(subdivisions=4, radius=6.0)
    cavity.invert()
    post = creation.cylinder(radius=3.0, height=20.0, sections=128)
    post.apply_translation([35.0, 0.0, 0.0])
    models.append(("box_cavity_post", trimesh.util.concatenate([box, cavity, post])))
    # Scale and place: a part far from the origin (CAD files in machine coordinates, where
    # f32 keeps only a few digits below the millimetre) and one in metres instead of mm.
    far = creation.icosphere(subdivisions=3, radius=10.0)
    far.apply_translation([20000.0, -15000.0, 8000.0])
    models.append(("icosphere_far", far))
    metres = creation.capsule(height=30.0, radius=5.0, count=[32, 32])
    metres.apply_scale(0.001)
    models.append(("capsule_metres", metres))
    # An assembly written body by body, as exporters write one: a plate with letters (1.7 % of
    # the diagonal each) sunk 0.5 into it and set on it, sharing no vertex with it.
    plate = creation.box(extents=[200.0, 120.0, 4.0])
    plate.apply_translation([0.0, 0.0, 2.0])
    letters = []
    for i in range(6):
        letter = creation.box(extents=[2.0, 3.0, 1.5])
        letter.apply_translation([-20.0 + 8.0 * i, 0.0, 4.75 - 0.5 * (i % 2)])
        letters.append(letter)
    models.append(("plate_letters", trimesh.util.concatenate([plate] + letters)))
    # A block with five small voids (1 % of the diagonal each), wound inward.
    block = creation.box(extents=[100.0, 60.0, 40.0])
    voids = []
    for i in range(5):
        void = creation.icosphere(subdivisions=2, radius=0.6)
        void.invert()
        void.apply_translation([-30.0 + 15.0 * i, 0.0, 0.0])
        voids.append(void)
    models.append(("block_voids", trimesh.util.concatenate([block] + voids)))
    # Many small separate parts beside a larger one (a plate and 400 cubes of 1, each 1.2 %
    # of the layout's diagonal, together a quarter of the surface): parts, not debris.
    plate = creation.box(extents=[60.0, 60.0, 2.0])
    cubes = []
    for i in range(20):
        for j in range(20):
            cube = creation.box(extents=[1.0, 1.0, 1.0])
            cube.apply_translation([40.5 + 3.0 * i, -29.5 + 3.0 * j, -0.5])
            cubes.append(cube)
    models.append(("plate_small_parts", trimesh.util.concatenate([plate] + cubes)))
    # Parts a small clearance apart, as print-in-place assemblies and tight layouts have: two
    # blocks 0.01 apart (4e-4 of the diagonal) and three plates stacked 0.02 apart. With
    # T-junctions along their edges, a crack's edge lies whole along the next part's edge.
    a = creation.box(extents=[10.0, 10.0, 10.0])
    b = creation.box(extents=[10.0, 10.0, 10.0])
    b.apply_translation([10.01, 0.0, 0.0])
    models.append(("blocks_clearance", trimesh.util.concatenate([a, b])))
    plates = []
    for i in range(3):
        p = creation.box(extents=[30.0, 30.0, 3.0])
        p.apply_translation([0.0, 0.0, 3.02 * i])
        plates.append(p)
    models.append(("plates_stacked", trimesh.util.concatenate(plates)))
    return models


def grid_patch(origin, u, v, nu, nv):
    """A rectangle `origin + s u + t v` (s, t in [0, 1]) meshed on its own as a grid of
    `nu` x `nv` quads, two facets each, wound round `u x v`: how a CAD exporter meshes one face
    without looking at its neighbours."""
    origin, u, v = (np.asarray(x, dtype=np.float64) for x in (origin, u, v))
    tris = []
    for i in range(nu):
        for j in range(nv):
            p = [origin + u * (a / nu) + v * (b / nv) for a, b in ((i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1))]
            tris += [[p[0], p[1], p[2]], [p[0], p[2], p[3]]]
    return tris


def patch_models():
    """Solids whose faces were meshed apart, with different subdivisions, so every seam is
    a row of T-junctions and no vertex of one face has a copy on the next: (name, facets,
    volume). Each is one body."""
    x, y, z = np.eye(3)
    models = []
    # A block 40 x 30 x 20, every face on its own grid.
    def block(res):
        faces = [
            ((0, 0, 0), 30 * y, 40 * x),  # bottom
            ((0, 0, 20), 40 * x, 30 * y),  # top
            ((0, 0, 0), 40 * x, 20 * z),  # front
            ((0, 30, 0), 20 * z, 40 * x),  # back
            ((0, 0, 0), 20 * z, 30 * y),  # left
            ((40, 0, 0), 30 * y, 20 * z),  # right
        ]
        return sum((grid_patch(o, u, v, *r) for (o, u, v), r in zip(faces, res)), [])

    models.append(("patch_block", block([(3, 4), (5, 7), (6, 2), (7, 5), (4, 3), (2, 9)]), 24000.0))
    # Faces of two facets next to faces of hundreds: long edges with many T-junctions each.
    models.append(
        ("patch_block_coarse_fine", block([(1, 1), (40, 30), (1, 1), (37, 23), (1, 1), (29, 31)]), 24000.0)
    )
    # An L-shaped bracket: its end faces are two rectangles each, meshed apart as well.
    faces = [
        ((0, 0, 0), 30 * y, 40 * x, 5, 3),  # bottom
        ((0, 0, 20), 20 * x, 30 * y, 7, 4),  # top
        ((20, 0, 10), 20 * x, 30 * y, 3, 8),  # step
        ((40, 0, 0), 30 * y, 10 * z, 6, 5),  # right
        ((20, 0, 10), 30 * y, 10 * z, 4, 3),  # step wall
        ((0, 0, 0), 20 * z, 30 * y, 5, 7),  # left
        ((0, 0, 0), 20 * x, 20 * z, 4, 6),  # front, upper part
        ((20, 0, 0), 20 * x, 10 * z, 7, 2),  # front, lower part
        ((0, 30, 0), 20 * z, 20 * x, 3, 5),  # back, upper part
        ((20, 30, 0), 10 * z, 20 * x, 4, 9),  # back, lower part
    ]
    models.append(("patch_bracket", sum((grid_patch(o, u, v, a, b) for o, u, v, a, b in faces), []), 18000.0))
    # Two blocks written whole that share a face meshed the same on both sides (the second is
    # the first mirrored), as an assembly's bodies come: one solid once the shared face goes.
    first = creation.box(extents=[20.0, 20.0, 20.0]).subdivide().subdivide()
    second = first.copy()
    second.vertices[:, 0] = 20.0 - second.vertices[:, 0]
    second.faces = second.faces[:, ::-1]
    models.append(("blocks_sharing_face", list(corner_array(first)) + list(corner_array(second)), 16000.0))
    # The same meshed differently on each side (trimesh splits a box's -x and +x faces along
    # different diagonals): no copies, one plane, one rim.
    left = creation.box(extents=[20.0, 20.0, 20.0])
    right = left.copy()
    right.apply_translation([20.0, 0.0, 0.0])
    models.append(("blocks_sharing_face_meshed_apart", list(corner_array(left)) + list(corner_array(right)), 16000.0))
    models.append(("cylinders_stacked", *stacked_cylinders()))
    # Plates whose top face, a face with holes, is missing: its rims are one loop round the
    # plate and one round each hole (or pin), all in one plane.
    for name, pins in (("plate_holes_top_missing", ()), ("plate_holes_pin_top_missing", (3,))):
        whole, top = plate_with_holes(pins)
        models.append((name, [t for i, t in enumerate(whole) if i not in top], float(mesh_of(whole).volume)))
    models += curved_seam_models()
    return [(name, np.array(t), volume) for name, t, volume in models]


def mesh_of(tri):
    tri = np.asarray(tri, dtype=np.float64)
    return trimesh.Trimesh(tri.reshape(-1, 3), np.arange(3 * len(tri)).reshape(-1, 3), process=True)


def plate_with_holes(pins=(), n=32, cell=20.0, r=5.0, h=4.0, pin_height=6.0):
    """A 2 x 2 plate of square cells, each with a round through-hole of `n` sides in its middle
    (or, for the cells in `pins`, a round pin of that size standing on it), every face meshed
    from its rims: a cell's top and bottom are strips between the hole's rim and the points
    where the rays through the rim's vertices meet the cell's square (its corners among them).
    Returns the facets (wound outward) and the indices of the top face's facets."""
    a = 2 * np.pi * np.arange(n) / n
    # The square's points on the same rays, from the cell's centre.
    square = np.stack([np.cos(a), np.sin(a)], axis=1)
    square = square / np.abs(square).max(axis=1)[:, None] * (cell / 2)
    rim = np.stack([np.cos(a), np.sin(a)], axis=1) * r
    tris, top = [], []

    def at(xy, z):
        return [xy[0], xy[1], z]

    for c in range(4):
        o = np.array([(c % 2) * cell, (c // 2) * cell])
        sq, hole = square + o, rim + o
        for k in range(n):
            j = (k + 1) % n
            # Top (+z) and bottom (-z) strips between the square and the rim.
            top.append(len(tris))
            tris.append([at(sq[k], h), at(sq[j], h), at(hole[j], h)])
            top.append(len(tris))
            tris.append([at(sq[k], h), at(hole[j], h), at(hole[k], h)])
            tris.append([at(sq[k], 0), at(hole[j], 0), at(sq[j], 0)])
            tris.append([at(sq[k], 0), at(hole[k], 0), at(hole[j], 0)])
            if c in pins:
                # A pin: its wall out of the rim, its top a fan; no hole under it.
                z1 = h + pin_height
                tris.append([at(hole[k], h), at(hole[j], h), at(hole[j], z1)])
                tris.append([at(hole[k], h), at(hole[j], z1), at(hole[k], z1)])
                tris.append([at(o, z1), at(hole[k], z1), at(hole[j], z1)])
                tris.append([at(o, 0), at(hole[j], 0), at(hole[k], 0)])
            else:
                # The hole's wall, facing its axis.
                tris.append([at(hole[k], 0), at(hole[j], h), at(hole[j], 0)])
                tris.append([at(hole[k], 0), at(hole[k], h), at(hole[j], h)])
        # The plate's outer walls: the square's points on the plate's rim.
        for k in range(n):
            j = (k + 1) % n
            mid = (sq[k] + sq[j]) / 2
            if np.abs(mid - cell / 2).max() > cell - 1e-9:
                tris.append([at(sq[k], 0), at(sq[j], 0), at(sq[j], h)])
                tris.append([at(sq[k], 0), at(sq[j], h), at(sq[k], h)])
    return np.array(tris), set(top)


def stacked_cylinders():
    """Two cylinders stacked, the lower one's top a fan from its centre (trimesh's) and the
    upper one's bottom a fan from a rim vertex: one face between two bodies, on the same rim,
    meshed differently on each side. Returns the facets and the volume."""
    lower = creation.cylinder(radius=5.0, height=10.0, sections=64)
    lower.apply_translation([0.0, 0.0, 5.0])
    upper = lower.copy()
    upper.apply_translation([0.0, 0.0, 10.0])
    tri = corner_array(upper)
    bottom = np.all(np.abs(tri[:, :, 2] - 10.0) < 1e-9, axis=1)
    rim = np.unique(tri[bottom].reshape(-1, 3), axis=0)
    rim = rim[np.linalg.norm(rim[:, :2], axis=1) > 1e-6]
    rim = rim[np.argsort(np.arctan2(rim[:, 1], rim[:, 0]))]
    # Wound round -z (outward for the upper body's bottom).
    fan = np.array([[rim[0], rim[k + 1], rim[k]] for k in range(1, len(rim) - 1)])
    return list(corner_array(lower)) + list(tri[~bottom]) + list(fan), 2.0 * float(lower.volume)


def ring(n, r, z, turn=0.0):
    """`n` points on a circle of radius `r` at height `z`, the first at `turn` segments."""
    a = 2.0 * np.pi * (np.arange(n + 1) + turn) / n
    return np.stack([r * np.cos(a), r * np.sin(a), np.full(n + 1, z)], axis=1)


def polygon_area(n, r):
    return n / 2.0 * r * r * np.sin(2.0 * np.pi / n)


def wall(n, r, z0, z1, inward=False):
    """A cylinder's wall of `n` segments between heights `z0` and `z1`, facing out (or in)."""
    lo, hi = ring(n, r, z0), ring(n, r, z1)
    tris = []
    for k in range(n):
        a, b, c, d = lo[k], lo[k + 1], hi[k + 1], hi[k]
        tris += [[a, c, b], [a, d, c]] if inward else [[a, b, c], [a, c, d]]
    return tris


def curved_seam_models():
    """Solids whose curved faces were meshed apart with different segment counts, so the
    seams' two sides lie off each other by the chords' sagitta: a cylinder whose caps have
    48 segments on a wall of 64 (sharing a vertex every 22.5 degrees), the same with the caps
    turned half a segment (sharing none), and a plate with a through hole whose rim has 32
    segments in the plate's faces and 40 in the hole's wall. The solid is what the walls
    bound (each cap or face, with the strip along its seam, spans the wall's polygon)."""
    models = []
    r, h = 10.0, 20.0
    for name, turn in (("seam_cylinder", 0.0), ("seam_cylinder_turned", 0.5)):
        tris = wall(64, r, 0.0, h)
        top, bottom = ring(48, r, h, turn), ring(48, r, 0.0, turn)
        for k in range(48):
            tris.append([np.array([0.0, 0.0, h]), top[k], top[k + 1]])
            tris.append([np.array([0.0, 0.0, 0.0]), bottom[k + 1], bottom[k]])
        models.append((name, tris, polygon_area(64, r) * h))
    # A 40 x 40 x 5 plate with a hole of radius 8 through its middle.
    side, t, hole = 20.0, 5.0, 8.0
    tris = wall(40, hole, 0.0, t, inward=True)
    inner = ring(32, hole, 0.0)
    a = 2.0 * np.pi * np.arange(33) / 32
    # Each face: quads from the hole's rim out to where the same ray meets the square.
    reach = side / np.maximum(np.abs(np.cos(a)), np.abs(np.sin(a)))
    outer = np.stack([reach * np.cos(a), reach * np.sin(a), np.zeros(33)], axis=1)
    for z, up in ((t, True), (0.0, False)):
        i, o = inner + [0, 0, z], outer + [0, 0, z]
        for k in range(32):
            q = [i[k], o[k], o[k + 1], i[k + 1]]
            tris += [[q[0], q[1], q[2]], [q[0], q[2], q[3]]] if up else [[q[0], q[2], q[1]], [q[0], q[3], q[2]]]
    # The four sides, two facets each (the faces' outer points lie on their edges).
    for k in range(4):
        c, s_ = np.cos(k * np.pi / 2), np.sin(k * np.pi / 2)
        rot = lambda p: np.array([c * p[0] - s_ * p[1], s_ * p[0] + c * p[1], p[2]])
        p = [rot(x) for x in ([side, -side, 0], [side, side, 0], [side, side, t], [side, -side, t])]
        tris += [[p[0], p[1], p[2]], [p[0], p[2], p[3]]]
    models.append(("seam_plate_hole", tris, (2 * side) ** 2 * t - polygon_area(40, hole) * t))
    return models


def corner_array(mesh):
    return np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces)]


def soup(tri, rng, noise):
    """Every facet's corners as separate copies, each moved by up to `noise` per coordinate."""
    if noise > 0:
        tri = tri + rng.uniform(-noise, noise, size=tri.shape)
    return tri


def break_all(tri, rng, diag):
    """Flips, holes, duplicates, degenerates, debris and shuffling on a soup of facets."""
    n = len(tri)
    tri = tri.copy()
    # 10 % of facets flipped.
    flip = rng.random(n) < 0.10
    tri[flip] = tri[flip][:, ::-1, :]
    # A few single facets removed (small holes), never neighbours of each other by chance
    # more than rarely.
    keep = np.ones(n, dtype=bool)
    keep[rng.choice(n, size=max(1, n // 2000), replace=False)] = False
    tri = tri[keep]
    # 3 % duplicated, some of them with their corners rotated (same facet, other start).
    dup = tri[rng.random(len(tri)) < 0.03]
    dup = np.roll(dup, 1, axis=1)
    # Degenerate facets: a corner repeated, and three corners on a line.
    a = tri[rng.choice(len(tri), size=20)]
    deg1 = np.stack([a[:, 0], a[:, 0], a[:, 1]], axis=1)
    deg2 = np.stack([a[:, 0], (a[:, 0] + a[:, 1]) / 2, a[:, 1]], axis=1)
    # Debris: tiny closed tetrahedra far from everything (under 0.5 % of the diagonal).
    lo = tri.reshape(-1, 3).min(axis=0)
    debris = []
    for i in range(5):
        c = lo - diag * (0.2 + 0.05 * i)
        s = diag * 0.002
        p = np.array([c, c + [s, 0, 0], c + [0, s, 0], c + [0, 0, s]])
        debris += [[p[0], p[2], p[1]], [p[0], p[1], p[3]], [p[0], p[3], p[2]], [p[1], p[2], p[3]]]
    tri = np.concatenate([tri, dup, deg1, deg2, np.array(debris)])
    return tri[rng.permutation(len(tri))]


def rounding_split(mesh, rng, count):
    """`count` vertices each split in two, the copy moved along one axis by two units in the
    last place of the model's largest coordinate along it, as a boolean or CAD kernel leaves a vertex
    it computed twice: the fan round the vertex is cut in two, one half on the copy, and two
    slivers close the gap between them (on an edge of two ulps). Facets as corner arrays."""
    faces = [list(f) for f in mesh.faces]
    vertices = [np.asarray(v, dtype=np.float32) for v in mesh.vertices]
    ulp = np.spacing(np.abs(mesh.vertices).max(axis=0).astype(np.float32)).astype(np.float64)
    used = set()
    for u in rng.permutation(len(mesh.vertices)):
        if count == 0:
            break
        u = int(u)
        fan = [i for i, f in enumerate(faces) if u in f]
        if len(fan) < 4 or any(set(faces[i]) & used for i in fan):
            continue
        # The fan in order round u: each facet (u, a, b) leads to the one starting at b.
        step = {}
        for i in fan:
            k = faces[i].index(u)
            step[faces[i][(k + 1) % 3]] = (faces[i][(k + 2) % 3], i)
        ring = [next(iter(step))]
        while len(ring) <= len(fan) and step[ring[-1]][0] != ring[0]:
            ring.append(step[ring[-1]][0])
        if len(ring) != len(fan):
            continue
        half = len(ring) // 2
        copy = np.array(vertices[u], dtype=np.float32)
        axis = int(rng.integers(3))
        copy[axis] = np.float32(copy[axis] + 2.0 * ulp[axis])
        vertices.append(copy)
        w = len(vertices) - 1
        for r in ring[half:]:
            i = step[r][1]
            faces[i] = [w if x == u else x for x in faces[i]]
        faces.append([u, ring[half], w])
        faces.append([u, w, ring[0]])
        used |= {u, w} | set(ring)
        count -= 1
    v = np.array(vertices, dtype=np.float64)
    return v[np.array(faces)]


def t_junctions(mesh, rng, count, sliver):
    """T-junctions: `count` facets split in two at the midpoint of an edge whose other facet
    stays whole (a crack along that edge, as CAD exports write where two patches meet), and,
    with `sliver`, the zero-area facet that some exporters add to close each crack."""
    v = list(np.asarray(mesh.vertices, dtype=np.float64))
    faces = [list(f) for f in np.asarray(mesh.faces)]
    owner = {}
    for i, f in enumerate(faces):
        for k in range(3):
            owner[(f[k], f[(k + 1) % 3])] = i
    used = set()
    extra = []
    for i in rng.permutation(len(faces)):
        if len(used) >= 2 * count:
            break
        a, b, c = faces[i]
        j = owner.get((b, a))
        if i in used or j is None or j in used:
            continue
        used.update((i, j))
        m = len(v)
        v.append((v[a] + v[b]) / 2)
        faces[i] = [a, m, c]
        extra.append([m, b, c])
        if sliver:
            extra.append([a, b, m])
    v = np.array(v)
    return v[np.array(faces + extra)]


def write_binary(path, tri, header=b"foreign_models"):
    with open(path, "wb") as f:
        f.write(header.ljust(80, b" ")[:80])
        f.write(struct.pack("<I", len(tri)))
        rec = np.zeros(len(tri), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
        rec["v"] = tri.astype(np.float32)
        f.write(rec.tobytes())


def write_ascii(path, tri):
    with open(path, "w") as f:
        f.write("solid foreign\n")
        for t in tri.astype(np.float32):
            f.write("  facet normal 0 0 0\n    outer loop\n")
            for v in t:
                f.write(f"      vertex {v[0]:.9e} {v[1]:.9e} {v[2]:.9e}\n")
            f.write("    endloop\n  endfacet\n")
        f.write("endsolid foreign\n")


def write_case(path, tri, fmt):
    if fmt == "ascii":
        write_ascii(path, tri)
    elif fmt == "solid-header":
        write_binary(path, tri, header=b"solid exported by a CAD tool")
    else:
        write_binary(path, tri)


def make(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20261201)
    manifest = []

    def noisy(tri, diag):
        """The variants every model gets: exact, soups from 1e-7 to 1e-5 of the diagonal, and
        every defect at once."""
        return [
            ("exact", tri, "binary"),
            ("soup_1e-7", soup(tri, rng, 1e-7 * diag), "binary"),
            ("soup_1e-6", soup(tri, rng, 1e-6 * diag), "solid-header"),
            ("soup_1e-5", soup(tri, rng, 1e-5 * diag), "binary"),
            ("broken_1e-6", break_all(soup(tri, rng, 1e-6 * diag), rng, diag), "ascii"),
        ]

    def write_all(name, variants, clean):
        """Write every variant of model `name`; `clean` is what the judge compares with."""
        for variant, t, fmt in variants:
            case = f"{name}.{variant}"
            path = os.path.join(out_dir, case + ".stl")
            write_case(path, t, fmt)
            manifest.append({"case": case, "file": path, **clean})

    for name, mesh in clean_models():
        assert mesh.is_watertight and mesh.is_winding_consistent, name
        tri = corner_array(mesh)
        diag = float(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]))
        split = mesh.split(only_watertight=False)
        variants = noisy(tri, diag) + [
            ("t_junction_crack", t_junctions(mesh, rng, 12, False), "binary"),
            ("t_junction_sliver", t_junctions(mesh, rng, 12, True), "binary"),
            ("t_junction_sliver_soup_1e-6", soup(t_junctions(mesh, rng, 12, True), rng, 1e-6 * diag), "binary"),
            # Vertices computed twice and written two units in the last place apart, joined by
            # slivers (the exact weld closes both).
            ("rounding_split", rounding_split(mesh, rng, 8), "binary"),
            # Written exactly, squashed (20 times longer along x, 20 times thinner along z: the
            # walls and clearances along z are then under the weld's bound, but every vertex
            # is closed), and far out along x only (f32 is coarse along x there, and fine
            # along y and z).
            ("squashed", tri * np.array([20.0, 1.0, 0.05]), "binary"),
            ("far_x", tri + np.array([200.0 * diag, 0.0, 0.0]), "binary"),
            # Mirrored (x -> -x), as an export with a negative scale writes it: every shell
            # inside out, voids wound outward.
            ("mirrored", tri * np.array([-1.0, 1.0, 1.0]), "binary"),
        ]
        if name in CLEARANCE:
            # Cracks at as many shared edges as they can be made at, in six draws (each from
            # a generator of its own), one in two as a soup.
            for i in range(6):
                t = t_junctions(mesh, np.random.default_rng(i), 100, i % 2 == 0)
                if i % 2 == 1:
                    t = soup(t, rng, 1e-6 * diag)
                variants.append((f"cracked_{i}", t, "binary"))
            # One stray facet far away (a point an export left at the origin): it makes the
            # bounding box 40 times larger than the model, whose parts must stay apart.
            far = tri.reshape(-1, 3).min(axis=0) - 40.0 * diag
            stray = np.array([[far, far + [1.0, 0.0, 0.0], far + [0.0, 1.0, 0.0]]])
            variants.append(("stray_facet", np.concatenate([tri, stray]), "binary"))
            variants.append(("stray_facet_soup_1e-6", soup(np.concatenate([tri, stray]), rng, 1e-6 * diag), "binary"))
        clean = {
            "volume": float(mesh.volume),
            "bodies": len(split),
            "negative_bodies": sum(1 for b in split if b.volume < 0),
            "facets": int(len(mesh.faces)),
        }
        write_all(name, variants, clean)
    for name, tri, volume in patch_models():
        corners = tri.reshape(-1, 3)
        diag = float(np.linalg.norm(corners.max(axis=0) - corners.min(axis=0)))
        clean = {"volume": volume, "bodies": 1, "negative_bodies": 0, "facets": len(tri)}
        write_all(name, noisy(tri, diag), clean)
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


def judge(manifest_path, repaired_dir):
    with open(manifest_path) as f:
        manifest = json.load(f)
    for case in manifest:
        path = os.path.join(repaired_dir, case["case"] + ".stl")
        m = trimesh.load(path, force="mesh", process=True)
        bodies = m.split(only_watertight=False)
        # Facets flat up to the rounding of f32 coordinates: height over the longest edge, at
        # most 1e-6 of the largest coordinate, each axis at its own magnitude (a model far out
        # along x only is rounded coarsely along x only), weighed along the height.
        tri = m.triangles
        sides = tri - np.roll(tri, 1, axis=1)
        lengths = np.linalg.norm(sides, axis=2)
        longest = sides[np.arange(len(tri)), lengths.argmax(axis=1)]
        edges = lengths.max(axis=1)
        heights = 2.0 * m.area_faces / np.maximum(edges, 1e-300)
        across = np.cross(np.cross(sides[:, 0], sides[:, 1]), longest)
        across /= np.maximum(np.linalg.norm(across, axis=1), 1e-300)[:, None]
        magnitude = np.abs(m.vertices).max(axis=0) if len(m.vertices) else np.zeros(3)
        rounding = 1e-6 * np.linalg.norm(across * magnitude, axis=1)
        flat = int((heights <= rounding).sum())
        print(
            json.dumps(
                {
                    "case": case["case"],
                    "watertight": bool(m.is_watertight),
                    "winding": bool(m.is_winding_consistent),
                    "volume": float(m.volume),
                    "clean_volume": case["volume"],
                    "bodies": len(bodies),
                    "clean_bodies": case["bodies"],
                    "negative_bodies": sum(1 for b in bodies if b.volume < 0),
                    "clean_negative_bodies": case["negative_bodies"],
                    "facets": int(len(m.faces)),
                    "clean_facets": case["facets"],
                    "flat_facets": flat,
                }
            )
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "judge":
        judge(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
