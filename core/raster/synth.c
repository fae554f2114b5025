/*
 * synth.c - synthetic SpaceNet-6-like scenes: SAR intensity (HH, HV, VH, VV), optical RGB and building
 * footprints on one 0.5 m UTM 31N grid (include/disopt_synth.h).
 *
 * A tile is laid out in local metres (u east, v south from the tile's north-west corner) over the tile
 * plus a margin: a rotated road grid, blocks cut into lots, buildings (rectangles and L shapes) on the
 * lots, water (a quay or a canal), vegetation (noise-driven parks and crown discs), vehicles, poles,
 * ships and container stacks. All vector geometry is burned with GDALRasterizeGeometries onto MEM
 * rasters of the tile grid (footprints, the SAR layover and shadow sweeps, the double-bounce lines,
 * the sun shadows), then the two images are rendered per pixel:
 *  - SAR: per-class linear backscatter per channel (volume scattering with high cross-pol for
 *    vegetation, dark water and asphalt), radar shadow behind buildings (length h tan(inc), away from the
 *    sensor) and inside their footprints, facade returns and roofs laid over toward the sensor (by
 *    h / tan(inc)), double-bounce lines at the walls facing the sensor (strongest for walls square to the
 *    range direction), thermal noise, then multiplicative speckle from L complex Gaussian looks
 *    (HH/VV and HV/VH correlated, slightly correlated in space), then unspeckled point targets (vehicles,
 *    poles, roof fittings, ships, containers) with impulse-response sidelobes; converted with
 *    v = 1.4 * 10 log10(I) + 48.
 *  - optical: class colours with texture, roofs (palette, pitched roofs shaded by the sun), sun shadows,
 *    tree crowns over everything (occlusion), vehicles, containers, ships.
 * The GeoJSON holds the true footprints (not the laid-over ones), clipped to the tile.
 */
#define _LARGEFILE64_SOURCE 1 /* VSIStatBufL is struct stat64 */
#include "disopt_synth.h"

#include "internal.h"

#include <cpl_conv.h>
#include <cpl_string.h>
#include <cpl_vsi.h>
#include <gdal_alg.h>
#include <math.h>
#include <ogr_api.h>
#include <ogr_srs_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PI 3.14159265358979323846
#define EPSG_UTM31N 32631
#define MARGIN_M 80.0

/* ---------------------------------------------------------------- random numbers (splitmix64) */
typedef struct {
    uint64_t s;
} rng;

static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* one independent stream per (seed, tile, purpose) */
static rng rng_make(uint64_t seed, uint64_t tile, uint64_t purpose) {
    rng r = {mix64(seed ^ mix64(tile * 1024u + purpose + 0x51ull))};
    return r;
}

static uint64_t rnext(rng *r) {
    r->s += 0x9E3779B97F4A7C15ull;
    uint64_t z = r->s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double unif(rng *r) { return (double)(rnext(r) >> 11) * (1.0 / 9007199254740992.0); }
static double urange(rng *r, double lo, double hi) { return lo + (hi - lo) * unif(r); }
static int uint_below(rng *r, int n) { return (int)(unif(r) * n); }

/* two standard normals (Marsaglia's polar method: only log and sqrt, both deterministic) */
static void normal2(rng *r, double *a, double *b) {
    double x, y, s;
    do {
        x = 2.0 * unif(r) - 1.0;
        y = 2.0 * unif(r) - 1.0;
        s = x * x + y * y;
    } while (s >= 1.0 || s == 0.0);
    double f = sqrt(-2.0 * log(s) / s);
    *a = x * f;
    *b = y * f;
}

/* ---------------------------------------------------------------- value noise */
static double lattice(uint64_t key, int64_t ix, int64_t iy) {
    uint64_t h = mix64(key ^ mix64((uint64_t)ix * 0x9E3779B1ull ^ ((uint64_t)iy << 32) ^ (uint64_t)iy));
    return (double)(h >> 11) * (1.0 / 9007199254740992.0);
}

static double vnoise(uint64_t key, double x, double y) {
    double fx = floor(x), fy = floor(y);
    int64_t ix = (int64_t)fx, iy = (int64_t)fy;
    double tx = x - fx, ty = y - fy;
    tx = tx * tx * (3 - 2 * tx);
    ty = ty * ty * (3 - 2 * ty);
    double a = lattice(key, ix, iy), b = lattice(key, ix + 1, iy), c = lattice(key, ix, iy + 1),
           d = lattice(key, ix + 1, iy + 1);
    return (a + (b - a) * tx) + ((c + (d - c) * tx) - (a + (b - a) * tx)) * ty;
}

/* fractal sum in [0, 1), mean about 0.5 */
static double fbm(uint64_t key, double x, double y, int oct) {
    double s = 0, amp = 1, norm = 0;
    for (int o = 0; o < oct; o++) {
        s += amp * vnoise(key + (uint64_t)o * 7919u, x, y);
        norm += amp;
        amp *= 0.5;
        x *= 2.03;
        y *= 2.03;
    }
    return s / norm;
}

/* ---------------------------------------------------------------- scene description */
typedef struct {
    double u, v;
} pt;

enum { LC_GRASS = 0, LC_BARE, LC_ROAD, LC_WATER, LC_PAVED };
enum { OBJ_VEHICLE = 0, OBJ_CONTAINER, OBJ_SHIP };

typedef struct {
    pt poly[6];
    int npoly;
    pt comp[2][4]; /* the footprint as one or two rectangles (sweeps are built per rectangle) */
    int ncomp;
    pt c;          /* centre of the lot rectangle */
    double ang;    /* long axis direction */
    double h;
    int pitched;
    unsigned char rgb[3];
    double roof_db, facade_db;
    double ribs; /* spacing of skylight / rib lines across flat industrial roofs (0: none) */
} bldg;

typedef struct {
    pt c;
    double ang, len, wid, h;
    int type;
    unsigned char rgb[3];
} obj;

typedef struct {
    pt c;
    double r, h;
} tree;

typedef struct {
    pt p;
    double amp, h; /* intensity (linear), height above ground (laid over by h / tan(inc)) */
} point_target;

typedef struct {
    /* grid */
    int S;
    double res, x0, ytop, W; /* W = S * res metres */
    int index;
    disopt_synth_scene scene;
    int orientation;
    double inc; /* radians */
    int looks;
    pt toward;  /* unit vector toward the sensor (u, v) */
    pt sun_shadow; /* unit vector of sun shadows */
    double sun_elev;
    /* roads */
    double road_ang, sp_a, sp_b, off_a, off_b, road_w;
    /* water */
    int water_kind; /* 0 none, 1 quay (half plane), 2 canal */
    pt wn;
    double wc, ww;
    /* contents */
    bldg *b;
    int nb, cb;
    obj *o;
    int no, co;
    tree *t;
    int nt, ct;
    point_target *p;
    int np, cp;
    uint64_t key;
} scene;

#define GROW(arr, n, cap)                                                                                    \
    do {                                                                                                     \
        if ((n) == (cap)) {                                                                                  \
            int nc_ = (cap) ? 2 * (cap) : 64;                                                                \
            void *p_ = realloc((arr), (size_t)nc_ * sizeof *(arr));                                          \
            if (!p_) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "synth: out of memory");                      \
            (arr) = p_;                                                                                      \
            (cap) = nc_;                                                                                     \
        }                                                                                                    \
    } while (0)

static void scene_free(scene *s) {
    free(s->b);
    free(s->o);
    free(s->t);
    free(s->p);
}

static int is_water(const scene *s, double u, double v) {
    if (s->water_kind == 0) return 0;
    double d = s->wn.u * (u - s->W / 2) + s->wn.v * (v - s->W / 2) - s->wc;
    return s->water_kind == 1 ? d > 0 : fabs(d) < s->ww / 2;
}

/* road-grid frame: a along the first axis, b across */
static void to_ab(const scene *s, double u, double v, double *a, double *b) {
    double c = cos(s->road_ang), sn = sin(s->road_ang);
    *a = u * c + v * sn;
    *b = -u * sn + v * c;
}
static pt from_ab(const scene *s, double a, double b) {
    double c = cos(s->road_ang), sn = sin(s->road_ang);
    pt p = {a * c - b * sn, a * sn + b * c};
    return p;
}

static double pmod(double x, double m) {
    double r = fmod(x, m);
    return r < 0 ? r + m : r;
}

static int is_road(const scene *s, double u, double v) {
    double a, b;
    to_ab(s, u, v, &a, &b);
    return pmod(a - s->off_a, s->sp_a) < s->road_w || pmod(b - s->off_b, s->sp_b) < s->road_w;
}

typedef struct {
    double sp[2], rw[2], lot_max, p_build, inset[2], h[2], p_l, p_pitched, p_courtyard_tree, veg_thr;
    double vehicles_per_100m, p_park;
} kind_params;

static const kind_params KINDS[4] = {
    /* suburban */ {{75, 110}, {7, 10}, 28, 0.85, {1.5, 3.0}, {4.5, 9}, 0.25, 0.8, 0.9, 0.66, 1.5, 0.1},
    /* dense */ {{60, 95}, {10, 16}, 26, 0.92, {0.3, 1.2}, {10, 28}, 0.35, 0.15, 0.6, 0.75, 3.0, 0.1},
    /* industrial */ {{120, 190}, {9, 14}, 75, 0.75, {4, 10}, {6, 15}, 0.25, 0.1, 0.2, 0.70, 1.0, 0.55},
    /* port */ {{130, 200}, {12, 16}, 90, 0.6, {5, 10}, {8, 20}, 0.1, 0.05, 0.1, 0.8, 0.6, 0.6},
};

static const unsigned char ROOF_PALETTE[][3] = {
    {158, 78, 58}, {138, 66, 52}, {68, 68, 74}, {92, 90, 94}, {132, 132, 130}, {184, 184, 178},
    {212, 212, 206}, {112, 88, 72}, {100, 110, 100}, {118, 132, 148}, {150, 140, 120}, {55, 58, 60},
};
static const unsigned char CAR_PALETTE[][3] = {
    {200, 200, 205}, {30, 30, 34}, {150, 20, 20}, {20, 40, 110}, {120, 120, 125}, {230, 230, 230}, {90, 90, 70},
};
static const unsigned char CONTAINER_PALETTE[][3] = {
    {170, 50, 40}, {40, 80, 150}, {200, 120, 40}, {60, 120, 70}, {150, 150, 150}, {210, 190, 60},
};

static int point_in_poly(const pt *p, int n, pt q) {
    int in = 0;
    for (int i = 0, j = n - 1; i < n; j = i++)
        if ((p[i].v > q.v) != (p[j].v > q.v) &&
            q.u < (p[j].u - p[i].u) * (q.v - p[i].v) / (p[j].v - p[i].v) + p[i].u)
            in = !in;
    return in;
}

static pt rot_about(pt p, pt c, double ang) {
    double cs = cos(ang), sn = sin(ang), du = p.u - c.u, dv = p.v - c.v;
    pt r = {c.u + du * cs - dv * sn, c.v + du * sn + dv * cs};
    return r;
}

/* a building on the lot [a0,a1] x [b0,b1] (road frame), maybe L-shaped, slightly rotated */
static disopt_status add_building(scene *s, rng *r, const kind_params *kp, double a0, double a1, double b0,
                                  double b1) {
    double in = urange(r, kp->inset[0], kp->inset[1]);
    a0 += in, a1 -= in, b0 += in, b1 -= in;
    if (a1 - a0 < 5 || b1 - b0 < 5 || (a1 - a0) * (b1 - b0) < 30) return DISOPT_OK;
    /* suburban houses: not the whole lot */
    if (s->scene == DISOPT_SYNTH_SUBURBAN) {
        /* detached, semi-detached and terraced houses: 8-12 m deep, the lot's length along the street */
        double da = a1 - a0, db = b1 - b0;
        if (da < db && da > 12) { double c = da - urange(r, 8, 12); a0 += c * 0.5; a1 -= c * 0.5; }
        if (db <= da && db > 12) { double c = db - urange(r, 8, 12); b0 += c * 0.5; b1 -= c * 0.5; }
    }
    pt q[4] = {from_ab(s, a0, b0), from_ab(s, a1, b0), from_ab(s, a1, b1), from_ab(s, a0, b1)};
    pt c = from_ab(s, (a0 + a1) / 2, (b0 + b1) / 2);
    if (c.u < -MARGIN_M || c.v < -MARGIN_M || c.u > s->W + MARGIN_M || c.v > s->W + MARGIN_M) return DISOPT_OK;
    for (int k = 0; k < 4; k++)
        if (is_water(s, q[k].u, q[k].v) || is_road(s, q[k].u, q[k].v)) return DISOPT_OK;
    GROW(s->b, s->nb, s->cb);
    bldg *B = &s->b[s->nb];
    memset(B, 0, sizeof *B);
    /* orientation jitter: large only where the lot leaves room (no overlapping footprints) */
    double room = fmin(in, 3.0) / (0.5 * fmax(a1 - a0, b1 - b0));
    double jit = unif(r) < 0.75 ? urange(r, -0.02, 0.02) : urange(r, -1, 1) * fmin(0.2, 0.8 * room);
    B->c = c;
    B->ang = s->road_ang + jit + ((a1 - a0) >= (b1 - b0) ? 0 : PI / 2);
    if (unif(r) < kp->p_l) {
        /* L: cut one corner (fx, fy of the sides) off; corners in order a0b0, a1b0, a1b1, a0b1 */
        double fx = urange(r, 0.35, 0.6), fy = urange(r, 0.35, 0.6);
        double am = a1 - fx * (a1 - a0), bm = b1 - fy * (b1 - b0);
        /* cut the (a1, b1) corner, then turn by a multiple of 90 degrees about the centre via mirroring */
        int mir_a = unif(r) < 0.5, mir_b = unif(r) < 0.5;
        double A[6] = {a0, a1, a1, am, am, a0}, Bv[6] = {b0, b0, bm, bm, b1, b1};
        double ca[2][4] = {{a0, a1, a1, a0}, {a0, am, am, a0}}, cb[2][4] = {{b0, b0, bm, bm}, {bm, bm, b1, b1}};
        for (int k = 0; k < 6; k++) {
            if (mir_a) A[k] = a0 + a1 - A[k];
            if (mir_b) Bv[k] = b0 + b1 - Bv[k];
            B->poly[k] = rot_about(from_ab(s, A[k], Bv[k]), c, jit);
        }
        B->npoly = 6;
        for (int m = 0; m < 2; m++)
            for (int k = 0; k < 4; k++) {
                double aa = mir_a ? a0 + a1 - ca[m][k] : ca[m][k], bb = mir_b ? b0 + b1 - cb[m][k] : cb[m][k];
                B->comp[m][k] = rot_about(from_ab(s, aa, bb), c, jit);
            }
        B->ncomp = 2;
    } else {
        for (int k = 0; k < 4; k++) B->poly[k] = B->comp[0][k] = rot_about(q[k], c, jit);
        B->npoly = 4;
        B->ncomp = 1;
    }
    B->h = urange(r, kp->h[0], kp->h[1]);
    if (s->scene == DISOPT_SYNTH_DENSE && unif(r) < 0.15) B->h *= 0.5; /* low annexes */
    else if (s->scene == DISOPT_SYNTH_DENSE && unif(r) < 0.08) B->h *= 1.6; /* towers */
    B->pitched = unif(r) < kp->p_pitched;
    int pal = uint_below(r, (int)(sizeof ROOF_PALETTE / sizeof ROOF_PALETTE[0]));
    if (B->pitched && unif(r) < 0.6) pal = uint_below(r, 2); /* tiles */
    for (int k = 0; k < 3; k++) {
        double x = ROOF_PALETTE[pal][k] * urange(r, 0.9, 1.1);
        B->rgb[k] = (unsigned char)(x > 250 ? 250 : x);
    }
    B->roof_db = urange(r, -8, 0);
    B->ribs = (s->scene == DISOPT_SYNTH_INDUSTRIAL || s->scene == DISOPT_SYNTH_PORT) && !B->pitched && unif(r) < 0.6
                  ? urange(r, 4, 9)
                  : 0;
    B->facade_db = urange(r, -9, -5);
    s->nb++;
    /* flat roofs carry fittings: strong unspeckled scatterers, laid over with the roof */
    if (!B->pitched) {
        int n = (int)(urange(r, 0, 1) * (B->h > 10 ? 4 : 2));
        for (int k = 0; k < n; k++) {
            pt e = B->comp[0][0], f = B->comp[0][1], g = B->comp[0][3];
            double x = urange(r, 0.15, 0.85), y = urange(r, 0.15, 0.85);
            GROW(s->p, s->np, s->cp);
            s->p[s->np].p.u = e.u + x * (f.u - e.u) + y * (g.u - e.u);
            s->p[s->np].p.v = e.v + x * (f.v - e.v) + y * (g.v - e.v);
            s->p[s->np].amp = pow(10.0, urange(r, 0.3, 1.2));
            s->p[s->np].h = B->h + 1;
            s->np++;
        }
    }
    return DISOPT_OK;
}

static disopt_status add_obj(scene *s, pt c, double ang, double len, double wid, double h, int type, const unsigned char *rgb) {
    GROW(s->o, s->no, s->co);
    obj *o = &s->o[s->no++];
    o->c = c, o->ang = ang, o->len = len, o->wid = wid, o->h = h, o->type = type;
    memcpy(o->rgb, rgb, 3);
    return DISOPT_OK;
}

static disopt_status add_tree(scene *s, pt c, double r, double h) {
    GROW(s->t, s->nt, s->ct);
    s->t[s->nt].c = c, s->t[s->nt].r = r, s->t[s->nt].h = h;
    s->nt++;
    return DISOPT_OK;
}

static disopt_status add_point(scene *s, pt p, double amp, double h) {
    GROW(s->p, s->np, s->cp);
    s->p[s->np].p = p, s->p[s->np].amp = amp, s->p[s->np].h = h;
    s->np++;
    return DISOPT_OK;
}

static void obj_corners(const obj *o, pt q[4]) {
    double c = cos(o->ang), sn = sin(o->ang), l = o->len / 2, w = o->wid / 2;
    double du[4] = {-l, l, l, -l}, dv[4] = {-w, -w, w, w};
    for (int k = 0; k < 4; k++) {
        q[k].u = o->c.u + du[k] * c - dv[k] * sn;
        q[k].v = o->c.v + du[k] * sn + dv[k] * c;
    }
}

static disopt_status yard(scene *s, rng *r, double a0, double a1, double b0, double b1);

/* lots of a block: recursive cuts; leaves touching the block edge are built on, inner ones are yards */
static disopt_status lots(scene *s, rng *r, const kind_params *kp, double a0, double a1, double b0, double b1,
                          double A0, double A1, double B0, double B1, int depth) {
    double da = a1 - a0, db = b1 - b0;
    if ((da > kp->lot_max || db > kp->lot_max) && depth < 12) {
        if (da >= db) {
            double m = a0 + da * urange(r, 0.35, 0.65);
            DP_TRY(lots(s, r, kp, a0, m, b0, b1, A0, A1, B0, B1, depth + 1));
            return lots(s, r, kp, m, a1, b0, b1, A0, A1, B0, B1, depth + 1);
        }
        double m = b0 + db * urange(r, 0.35, 0.65);
        DP_TRY(lots(s, r, kp, a0, a1, b0, m, A0, A1, B0, B1, depth + 1));
        return lots(s, r, kp, a0, a1, m, b1, A0, A1, B0, B1, depth + 1);
    }
    int edge = a0 <= A0 + 1e-9 || a1 >= A1 - 1e-9 || b0 <= B0 + 1e-9 || b1 >= B1 - 1e-9;
    int inner_ok = s->scene == DISOPT_SYNTH_INDUSTRIAL || s->scene == DISOPT_SYNTH_PORT;
    pt c = from_ab(s, (a0 + a1) / 2, (b0 + b1) / 2);
    if ((edge || inner_ok) && unif(r) < kp->p_build) return add_building(s, r, kp, a0, a1, b0, b1);
    if (is_water(s, c.u, c.v)) return DISOPT_OK;
    if (c.u < -MARGIN_M || c.v < -MARGIN_M || c.u > s->W + MARGIN_M || c.v > s->W + MARGIN_M) return DISOPT_OK;
    if (!edge || unif(r) < 0.3) {
        /* a yard: trees */
        int n = (int)(da * db / 60.0 * kp->p_courtyard_tree * urange(r, 0.3, 1.0));
        for (int k = 0; k < n; k++) {
            pt p = from_ab(s, urange(r, a0, a1), urange(r, b0, b1));
            DP_TRY(add_tree(s, p, urange(r, 1.8, 4.5), urange(r, 5, 14)));
        }
        return DISOPT_OK;
    }
    if (unif(r) < kp->p_park || s->scene == DISOPT_SYNTH_PORT) return yard(s, r, a0, a1, b0, b1);
    return DISOPT_OK;
}

/* parking lot / container yard contents on the lot [a0,a1] x [b0,b1] */
static disopt_status yard(scene *s, rng *r, double a0, double a1, double b0, double b1) {
    int port = s->scene == DISOPT_SYNTH_PORT;
    double in = 2;
    a0 += in, a1 -= in, b0 += in, b1 -= in;
    if (a1 - a0 < 8 || b1 - b0 < 8) return DISOPT_OK;
    double ang = s->road_ang;
    if (port) {
        for (double b = b0 + 2; b + 2.5 < b1; b += 4.5)
            for (double a = a0; a + 12.2 < a1; a += 13.0) {
                if (unif(r) < 0.15) continue;
                int levels = 1 + uint_below(r, 4);
                const unsigned char *col = CONTAINER_PALETTE[uint_below(r, 6)];
                pt c = from_ab(s, a + 6.1, b + 1.22);
                if (is_water(s, c.u, c.v)) continue;
                DP_TRY(add_obj(s, c, ang, 12.2, 2.44, 2.6 * levels, OBJ_CONTAINER, col));
                if (unif(r) < 0.3) DP_TRY(add_point(s, c, pow(10.0, urange(r, 0.8, 1.6)), 2.6 * levels));
            }
    } else {
        for (double b = b0 + 1; b + 4.8 < b1; b += 6.5)
            for (double a = a0; a + 2.4 < a1; a += 2.7) {
                if (unif(r) < 0.35) continue;
                pt c = from_ab(s, a + 1.2, b + 2.4);
                if (is_water(s, c.u, c.v)) continue;
                DP_TRY(add_obj(s, c, ang + PI / 2 + urange(r, -0.05, 0.05), 4.5, 1.9, 1.5, OBJ_VEHICLE,
                               CAR_PALETTE[uint_below(r, 7)]));
                DP_TRY(add_point(s, c, pow(10.0, urange(r, 0.5, 1.4)), 1.0));
            }
    }
    return DISOPT_OK;
}

static disopt_status build_scene(scene *s, const disopt_synth_options *o, int index) {
    rng r = rng_make(o->seed, (uint64_t)index, 1);
    s->S = o->size;
    s->res = o->res;
    s->W = o->size * o->res;
    s->index = index;
    int cols = o->grid_columns > 0 ? o->grid_columns : 10;
    s->x0 = o->origin_x + (index % cols) * s->W;
    s->ytop = o->origin_y - (index / cols) * s->W;
    s->key = mix64(o->seed ^ mix64((uint64_t)index + 77));
    double u = unif(&r);
    s->scene = u < 0.35 ? DISOPT_SYNTH_SUBURBAN : u < 0.6 ? DISOPT_SYNTH_DENSE : u < 0.8 ? DISOPT_SYNTH_INDUSTRIAL
                                                                                   : DISOPT_SYNTH_PORT;
    /* strips of two tiles; orientation alternates from a seeded start */
    int strip = index / 2;
    rng rs = rng_make(o->seed, (uint64_t)strip, 2);
    int start = (int)(mix64(o->seed) & 1);
    s->orientation = (strip + start) & 1;
    s->inc = urange(&rs, 35, 55) * PI / 180;
    s->looks = 2 + uint_below(&rs, 3);
    s->toward.u = 0;
    s->toward.v = s->orientation == 0 ? -1 : 1; /* from the north: the sensor is toward -v */
    double sun_az = urange(&r, 125, 165) * PI / 180;
    s->sun_shadow.u = -sin(sun_az);
    s->sun_shadow.v = cos(sun_az); /* opposite to the sun: north-west */
    s->sun_elev = urange(&r, 35, 55) * PI / 180;
    const kind_params *kp = &KINDS[s->scene];
    s->road_ang = unif(&r) < 0.4 ? urange(&r, -0.08, 0.08) : urange(&r, 0, PI / 2);
    s->sp_a = urange(&r, kp->sp[0], kp->sp[1]);
    s->sp_b = urange(&r, kp->sp[0], kp->sp[1]) * (s->scene == DISOPT_SYNTH_SUBURBAN ? 0.7 : 1.0);
    s->off_a = urange(&r, 0, s->sp_a);
    s->off_b = urange(&r, 0, s->sp_b);
    s->road_w = urange(&r, kp->rw[0], kp->rw[1]);
    /* water */
    s->water_kind = 0;
    if (s->scene == DISOPT_SYNTH_PORT) {
        s->water_kind = 1;
        double wa = uint_below(&r, 4) * PI / 2 + urange(&r, -0.1, 0.1);
        s->wn.u = cos(wa), s->wn.v = sin(wa);
        s->wc = urange(&r, -0.15, 0.2) * s->W;
    } else if (unif(&r) < 0.3) {
        s->water_kind = 2;
        double wa = s->road_ang + (unif(&r) < 0.5 ? 0 : PI / 2);
        s->wn.u = cos(wa), s->wn.v = sin(wa);
        s->wc = urange(&r, -0.35, 0.35) * s->W;
        s->ww = urange(&r, 14, 35);
    }
    /* blocks of the road grid that meet the tile + margin */
    double amin = 1e30, amax = -1e30, bmin = 1e30, bmax = -1e30;
    double cu[4] = {-MARGIN_M, s->W + MARGIN_M, s->W + MARGIN_M, -MARGIN_M};
    double cv[4] = {-MARGIN_M, -MARGIN_M, s->W + MARGIN_M, s->W + MARGIN_M};
    for (int k = 0; k < 4; k++) {
        double a, b;
        to_ab(s, cu[k], cv[k], &a, &b);
        amin = fmin(amin, a), amax = fmax(amax, a), bmin = fmin(bmin, b), bmax = fmax(bmax, b);
    }
    int i0 = (int)floor((amin - s->off_a) / s->sp_a) - 1, i1 = (int)floor((amax - s->off_a) / s->sp_a) + 1;
    int j0 = (int)floor((bmin - s->off_b) / s->sp_b) - 1, j1 = (int)floor((bmax - s->off_b) / s->sp_b) + 1;
    double sw = 2.0; /* sidewalk */
    for (int i = i0; i <= i1; i++)
        for (int j = j0; j <= j1; j++) {
            double A0 = s->off_a + i * s->sp_a + s->road_w + sw, A1 = s->off_a + (i + 1) * s->sp_a - sw;
            double B0 = s->off_b + j * s->sp_b + s->road_w + sw, B1 = s->off_b + (j + 1) * s->sp_b - sw;
            pt c = from_ab(s, (A0 + A1) / 2, (B0 + B1) / 2);
            if (c.u < -MARGIN_M - s->sp_a || c.v < -MARGIN_M - s->sp_a || c.u > s->W + MARGIN_M + s->sp_a ||
                c.v > s->W + MARGIN_M + s->sp_a)
                continue;
            DP_TRY(lots(s, &r, kp, A0, A1, B0, B1, A0, A1, B0, B1, 0));
        }
    /* street trees and poles along the roads, vehicles on them */
    for (int i = i0; i <= i1; i++) {
        double a_road = s->off_a + i * s->sp_a;
        for (double b = bmin; b < bmax; b += urange(&r, 7, 12)) {
            for (int side = 0; side < 2; side++) {
                double a = side ? a_road + s->road_w + 1.0 : a_road - 1.0;
                pt p = from_ab(s, a, b);
                if (is_water(s, p.u, p.v)) continue;
                if (unif(&r) < (s->scene == DISOPT_SYNTH_SUBURBAN ? 0.45 : s->scene == DISOPT_SYNTH_DENSE ? 0.3 : 0.08))
                    DP_TRY(add_tree(s, p, urange(&r, 2.0, 4.0), urange(&r, 6, 14)));
            }
        }
    }
    for (int dir = 0; dir < 2; dir++) {
        int k0 = dir ? j0 : i0, k1 = dir ? j1 : i1;
        double sp = dir ? s->sp_b : s->sp_a, off = dir ? s->off_b : s->off_a;
        double lo = dir ? amin : bmin, hi = dir ? amax : bmax;
        for (int k = k0; k <= k1; k++) {
            double base = off + k * sp;
            double pole_step = urange(&r, 22, 35);
            for (double t = lo + urange(&r, 0, pole_step); t < hi; t += pole_step) {
                double a = base + 0.6, b = t;
                pt p = dir ? from_ab(s, b, a) : from_ab(s, a, b);
                if (!is_water(s, p.u, p.v)) DP_TRY(add_point(s, p, pow(10.0, urange(&r, 1.2, 2.8)), 6));
            }
            double veh = kp->vehicles_per_100m;
            for (double t = lo; t < hi; t += 100.0) {
                int n = (int)(veh * urange(&r, 0.3, 1.7));
                for (int m = 0; m < n; m++) {
                    double a = base + s->road_w * (unif(&r) < 0.5 ? 0.27 : 0.73), b = t + urange(&r, 0, 100);
                    pt p = dir ? from_ab(s, b, a) : from_ab(s, a, b);
                    if (is_water(s, p.u, p.v)) continue;
                    double ang = s->road_ang + (dir ? 0 : PI / 2);
                    DP_TRY(add_obj(s, p, ang, 4.5, 1.9, 1.5, OBJ_VEHICLE, CAR_PALETTE[uint_below(&r, 7)]));
                    DP_TRY(add_point(s, p, pow(10.0, urange(&r, 0.5, 1.4)), 1.0));
                }
            }
        }
    }
    /* ships on the water */
    if (s->water_kind) {
        int n = s->water_kind == 1 ? 1 + uint_below(&r, 4) : uint_below(&r, 3);
        for (int k = 0; k < n; k++) {
            double len = s->water_kind == 1 ? urange(&r, 25, 110) : urange(&r, 12, 30);
            double wid = len * urange(&r, 0.15, 0.22);
            double ang = atan2(s->wn.v, s->wn.u) + PI / 2 + urange(&r, -0.1, 0.1);
            for (int tries = 0; tries < 20; tries++) {
                pt c = {urange(&r, 0, s->W), urange(&r, 0, s->W)};
                if (s->water_kind == 2) { /* along the canal's axis */
                    double d = s->wn.u * (c.u - s->W / 2) + s->wn.v * (c.v - s->W / 2) - s->wc;
                    c.u -= d * s->wn.u - urange(&r, -0.2, 0.2) * s->ww * s->wn.u;
                    c.v -= d * s->wn.v - urange(&r, -0.2, 0.2) * s->ww * s->wn.v;
                    wid = fmin(wid, s->ww * 0.35);
                }
                obj tmp = {c, ang, len, wid, 0, OBJ_SHIP, {0, 0, 0}};
                pt q[4];
                obj_corners(&tmp, q);
                int ok = 1;
                for (int m = 0; m < 4; m++) ok &= is_water(s, q[m].u, q[m].v);
                if (!ok) continue;
                const unsigned char hull[3] = {(unsigned char)urange(&r, 180, 235), (unsigned char)urange(&r, 180, 235),
                                               (unsigned char)urange(&r, 180, 235)};
                double h = urange(&r, 4, 14);
                DP_TRY(add_obj(s, c, ang, len, wid, h, OBJ_SHIP, hull));
                int pts = 3 + (int)(len / 8);
                for (int m = 0; m < pts; m++) {
                    double t = urange(&r, -0.45, 0.45) * len, w = urange(&r, -0.4, 0.4) * wid;
                    pt p = {c.u + t * cos(ang) - w * sin(ang), c.v + t * sin(ang) + w * cos(ang)};
                    DP_TRY(add_point(s, p, pow(10.0, urange(&r, 1.2, 3.0)), urange(&r, 1, h)));
                }
                break;
            }
        }
    }
    return DISOPT_OK;
}

/* ---------------------------------------------------------------- GDAL rasterization helpers */
static OGRGeometryH make_poly(const scene *s, const pt *p, int n) {
    OGRGeometryH ring = OGR_G_CreateGeometry(wkbLinearRing), poly = OGR_G_CreateGeometry(wkbPolygon);
    if (!ring || !poly) {
        if (ring) OGR_G_DestroyGeometry(ring);
        if (poly) OGR_G_DestroyGeometry(poly);
        return NULL;
    }
    for (int k = 0; k <= n; k++) OGR_G_AddPoint_2D(ring, s->x0 + p[k % n].u, s->ytop - p[k % n].v);
    OGR_G_AddGeometryDirectly(poly, ring);
    return poly;
}

/* convex hull of a rectangle and its translate: the area swept moving it by (du, dv) */
static OGRGeometryH make_sweep(const scene *s, const pt *q, double du, double dv) {
    OGRGeometryH mp = OGR_G_CreateGeometry(wkbMultiPoint);
    if (!mp) return NULL;
    for (int k = 0; k < 8; k++) {
        OGRGeometryH p = OGR_G_CreateGeometry(wkbPoint);
        if (!p) {
            OGR_G_DestroyGeometry(mp);
            return NULL;
        }
        double u = q[k % 4].u + (k >= 4 ? du : 0), v = q[k % 4].v + (k >= 4 ? dv : 0);
        OGR_G_SetPoint_2D(p, 0, s->x0 + u, s->ytop - v);
        OGR_G_AddGeometryDirectly(mp, p);
    }
    OGRGeometryH h = OGR_G_ConvexHull(mp);
    OGR_G_DestroyGeometry(mp);
    return h;
}

typedef struct {
    OGRGeometryH *g;
    double *burn;
    int n, cap, nbands;
} geomlist;

static disopt_status gl_add(geomlist *l, OGRGeometryH g, const double *burn) {
    if (!g) return dp_error(DISOPT_ERR_INTERNAL, "synth: OGR could not build a geometry");
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 256;
        OGRGeometryH *ng = realloc(l->g, (size_t)nc * sizeof *ng);
        if (ng) l->g = ng;
        double *nbu = ng ? realloc(l->burn, (size_t)nc * l->nbands * sizeof *nbu) : NULL;
        if (!ng || !nbu) {
            OGR_G_DestroyGeometry(g);
            return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "synth: out of memory");
        }
        l->burn = nbu;
        l->cap = nc;
    }
    l->g[l->n] = g;
    memcpy(l->burn + (size_t)l->n * l->nbands, burn, (size_t)l->nbands * sizeof *burn);
    l->n++;
    return DISOPT_OK;
}

static void gl_free(geomlist *l) {
    for (int i = 0; i < l->n; i++) OGR_G_DestroyGeometry(l->g[i]);
    free(l->g);
    free(l->burn);
    memset(l, 0, sizeof *l);
}

/* burns the list onto a fresh MEM raster of the tile grid and reads it back (nbands x S x S) */
static disopt_status burn(const scene *s, geomlist *l, GDALDataType dt, int add, void *dst) {
    GDALDriverH mem = GDALGetDriverByName("MEM");
    if (!mem) return dp_error(DISOPT_ERR_UNSUPPORTED, "synth: GDAL's MEM driver is missing");
    GDALDatasetH ds = GDALCreate(mem, "", s->S, s->S, l->nbands, dt, NULL);
    if (!ds) return dp_error(DISOPT_ERR_IO, "synth: cannot create a MEM raster: %s", CPLGetLastErrorMsg());
    double gt[6] = {s->x0, s->res, 0, s->ytop, 0, -s->res};
    disopt_status st = DISOPT_OK;
    if (GDALSetGeoTransform(ds, gt) != CE_None) st = dp_error(DISOPT_ERR_IO, "synth: geotransform: %s", CPLGetLastErrorMsg());
    int bands[4] = {1, 2, 3, 4};
    char **opt = add ? CSLSetNameValue(NULL, "MERGE_ALG", "ADD") : NULL;
    if (st == DISOPT_OK && l->n > 0 &&
        GDALRasterizeGeometries(ds, l->nbands, bands, l->n, l->g, NULL, NULL, l->burn, opt, NULL, NULL) != CE_None)
        st = dp_error(DISOPT_ERR_IO, "synth: rasterize: %s", CPLGetLastErrorMsg());
    CSLDestroy(opt);
    int sz = GDALGetDataTypeSizeBytes(dt);
    if (st == DISOPT_OK &&
        GDALDatasetRasterIO(ds, GF_Read, 0, 0, s->S, s->S, dst, s->S, s->S, dt, l->nbands, bands, sz,
                            (GSpacing)sz * s->S, (GSpacing)sz * s->S * s->S) != CE_None)
        st = dp_error(DISOPT_ERR_IO, "synth: read back: %s", CPLGetLastErrorMsg());
    GDALClose(ds);
    return st;
}

/* ---------------------------------------------------------------- rendering */
typedef struct {
    int32_t *fp;     /* building id + 1 of the true footprint */
    int32_t *roof;   /* building id + 1 of the roof as laid over toward the sensor */
    int32_t *lay;    /* building id + 1 of footprint + layover sweep */
    uint8_t *dark;   /* radar shadow (footprint + sweep away from the sensor) */
    float *db;       /* double bounce: co-pol, cross-pol intensity (2 x S x S) */
    int32_t *sun;    /* building id + 1 of the sun shadow */
    int32_t *objs;   /* object id + 1 */
    uint8_t *lc;
    float *tree;     /* crown height above ground (0: none) */
    float *tshade;   /* crown shading */
} layers;

static void layers_free(layers *L) {
    free(L->fp), free(L->roof), free(L->lay), free(L->dark), free(L->db), free(L->sun), free(L->objs), free(L->lc);
    free(L->tree), free(L->tshade);
}

static disopt_status make_layers(const scene *s, layers *L) {
    size_t N = (size_t)s->S * s->S;
    L->fp = malloc(N * 4), L->roof = malloc(N * 4), L->lay = malloc(N * 4), L->dark = malloc(N);
    L->db = malloc(N * 8), L->sun = malloc(N * 4), L->objs = malloc(N * 4), L->lc = malloc(N);
    L->tree = calloc(N, 4), L->tshade = calloc(N, 4);
    if (!L->fp || !L->roof || !L->lay || !L->dark || !L->db || !L->sun || !L->objs || !L->lc || !L->tree || !L->tshade)
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "synth: out of memory");
    double lay = 1.0 / tan(s->inc), shd = tan(s->inc);
    geomlist fp = {.nbands = 1}, roof = {.nbands = 1}, lw = {.nbands = 1}, dark = {.nbands = 1}, db = {.nbands = 2},
             sun = {.nbands = 1}, ob = {.nbands = 1};
    disopt_status st = DISOPT_OK;
    for (int i = 0; st == DISOPT_OK && i < s->nb; i++) {
        const bldg *B = &s->b[i];
        double id = i + 1, one = 1;
        double d = B->h * lay, sh = B->h * shd, ls = B->h / tan(s->sun_elev);
        double dr = B->pitched ? 0.8 * d : d; /* pitched: roof points between eaves and ridge */
        pt moved[6];
        for (int k = 0; k < B->npoly; k++)
            moved[k].u = B->poly[k].u + dr * s->toward.u, moved[k].v = B->poly[k].v + dr * s->toward.v;
        st = gl_add(&fp, make_poly(s, B->poly, B->npoly), &id);
        if (st == DISOPT_OK) st = gl_add(&roof, make_poly(s, moved, B->npoly), &id);
        if (st == DISOPT_OK) st = gl_add(&dark, make_poly(s, B->poly, B->npoly), &one);
        for (int m = 0; st == DISOPT_OK && m < B->ncomp; m++) {
            st = gl_add(&lw, make_sweep(s, B->comp[m], d * s->toward.u, d * s->toward.v), &id);
            if (st == DISOPT_OK) st = gl_add(&dark, make_sweep(s, B->comp[m], -sh * s->toward.u, -sh * s->toward.v), &one);
            if (st == DISOPT_OK)
                st = gl_add(&sun, make_sweep(s, B->comp[m], ls * s->sun_shadow.u, ls * s->sun_shadow.v), &id);
        }
        /* double bounce at the walls that face the sensor */
        for (int k = 0; st == DISOPT_OK && k < B->npoly; k++) {
            pt p = B->poly[k], q = B->poly[(k + 1) % B->npoly];
            double eu = q.u - p.u, ev = q.v - p.v, len = sqrt(eu * eu + ev * ev);
            if (len < 1e-6) continue;
            pt n = {ev / len, -eu / len}, mid = {(p.u + q.u) / 2 + 0.05 * ev / len, (p.v + q.v) / 2 - 0.05 * eu / len};
            if (point_in_poly(B->poly, B->npoly, mid)) n.u = -n.u, n.v = -n.v;
            double cphi = n.u * s->toward.u + n.v * s->toward.v;
            if (cphi <= 0.05) continue;
            double phi = acos(cphi > 1 ? 1 : cphi);
            double amp = pow(10.0, 1.0 + 0.7 * lattice(s->key, i, k)) * (exp(-(phi / 0.2) * (phi / 0.2)) + 0.1 * cphi);
            double sx = sin(2 * phi);
            double v2[2] = {amp, amp * (0.02 + 0.15 * sx * sx)};
            OGRGeometryH ls_ = OGR_G_CreateGeometry(wkbLineString);
            if (ls_) {
                OGR_G_AddPoint_2D(ls_, s->x0 + p.u, s->ytop - p.v);
                OGR_G_AddPoint_2D(ls_, s->x0 + q.u, s->ytop - q.v);
            }
            st = gl_add(&db, ls_, v2);
            /* the roof edge (parapet, eaves) on that side: a weaker line, laid over with the roof */
            OGRGeometryH le = st == DISOPT_OK ? OGR_G_CreateGeometry(wkbLineString) : NULL;
            if (le) {
                OGR_G_AddPoint_2D(le, s->x0 + p.u + d * s->toward.u, s->ytop - p.v - d * s->toward.v);
                OGR_G_AddPoint_2D(le, s->x0 + q.u + d * s->toward.u, s->ytop - q.v - d * s->toward.v);
            }
            double v3[2] = {v2[0] * 0.25, v2[1] * 0.25};
            if (st == DISOPT_OK) st = gl_add(&db, le, v3);
        }
    }
    for (int i = 0; st == DISOPT_OK && i < s->no; i++) {
        pt q[4];
        obj_corners(&s->o[i], q);
        double id = i + 1;
        st = gl_add(&ob, make_poly(s, q, 4), &id);
        if (st != DISOPT_OK || s->o[i].type != OBJ_SHIP) continue;
        /* ships: hull-water double bounce on the long side that faces the sensor */
        pt e0 = q[0], e1 = q[1];
        if ((q[3].u - q[0].u) * s->toward.u + (q[3].v - q[0].v) * s->toward.v > 0) e0 = q[3], e1 = q[2];
        double amp = pow(10.0, 1.6 + 0.6 * lattice(s->key + 3, i, 0)) * fabs(cos(s->o[i].ang));
        double v2[2] = {amp, amp * 0.05};
        OGRGeometryH ls_ = OGR_G_CreateGeometry(wkbLineString);
        if (ls_) {
            OGR_G_AddPoint_2D(ls_, s->x0 + e0.u, s->ytop - e0.v);
            OGR_G_AddPoint_2D(ls_, s->x0 + e1.u, s->ytop - e1.v);
        }
        st = gl_add(&db, ls_, v2);
    }
    if (st == DISOPT_OK) st = burn(s, &fp, GDT_Int32, 0, L->fp);
    if (st == DISOPT_OK) st = burn(s, &roof, GDT_Int32, 0, L->roof);
    if (st == DISOPT_OK) st = burn(s, &lw, GDT_Int32, 0, L->lay);
    if (st == DISOPT_OK) st = burn(s, &dark, GDT_Byte, 0, L->dark);
    if (st == DISOPT_OK) st = burn(s, &db, GDT_Float32, 1, L->db);
    if (st == DISOPT_OK) st = burn(s, &sun, GDT_Int32, 0, L->sun);
    if (st == DISOPT_OK) st = burn(s, &ob, GDT_Int32, 0, L->objs);
    gl_free(&fp), gl_free(&roof), gl_free(&lw), gl_free(&dark), gl_free(&db), gl_free(&sun), gl_free(&ob);
    if (st != DISOPT_OK) return st;
    /* land cover */
    int S = s->S;
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            double u = (x + 0.5) * s->res, v = (y + 0.5) * s->res;
            uint8_t c;
            if (is_water(s, u, v)) c = LC_WATER;
            else if (is_road(s, u, v)) c = LC_ROAD;
            else {
                double f = fbm(s->key + 11, u / 60, v / 60, 3);
                c = f > 0.62 ? LC_BARE : LC_GRASS;
                if (s->scene == DISOPT_SYNTH_PORT || s->scene == DISOPT_SYNTH_INDUSTRIAL)
                    c = f > 0.45 ? LC_PAVED : c;
                if (s->water_kind == 1) { /* quay apron */
                    double d = s->wn.u * (u - s->W / 2) + s->wn.v * (v - s->W / 2) - s->wc;
                    if (d > -25) c = LC_PAVED;
                }
            }
            L->lc[(size_t)y * S + x] = c;
        }
    /* vegetation: parks from noise, then crowns (discs, stamped procedurally) */
    const kind_params *kp = &KINDS[s->scene];
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            size_t i = (size_t)y * S + x;
            if (L->lc[i] == LC_WATER || L->lc[i] == LC_ROAD || L->fp[i] || L->objs[i]) continue;
            double u = (x + 0.5) * s->res, v = (y + 0.5) * s->res;
            double f = fbm(s->key + 23, u / 90, v / 90, 4);
            if (f > kp->veg_thr) {
                double g = fbm(s->key + 29, u / 4, v / 4, 3);
                if (g > 0.38) {
                    L->tree[i] = (float)(6 + 10 * g);
                    L->tshade[i] = (float)(0.7 + 0.6 * (g - 0.38));
                }
            }
        }
    for (int k = 0; k < s->nt; k++) {
        const tree *t = &s->t[k];
        int x0 = (int)floor((t->c.u - t->r) / s->res), x1 = (int)ceil((t->c.u + t->r) / s->res);
        int y0 = (int)floor((t->c.v - t->r) / s->res), y1 = (int)ceil((t->c.v + t->r) / s->res);
        for (int y = y0 < 0 ? 0 : y0; y <= y1 && y < S; y++)
            for (int x = x0 < 0 ? 0 : x0; x <= x1 && x < S; x++) {
                double du = (x + 0.5) * s->res - t->c.u, dv = (y + 0.5) * s->res - t->c.v;
                double rr = (du * du + dv * dv) / (t->r * t->r);
                if (rr > 1) continue;
                size_t i = (size_t)y * S + x;
                if (L->lc[i] == LC_WATER) continue;
                /* lit on the side toward the sun (against the shadow direction) */
                double lit = -(du * s->sun_shadow.u + dv * s->sun_shadow.v) / t->r;
                L->tree[i] = (float)t->h;
                L->tshade[i] = (float)(0.85 + 0.3 * lit - 0.2 * rr);
            }
    }
    return DISOPT_OK;
}

/* roof half (+1 / -1) of a pitched roof at (u, v), given the footprint's centre c (laid over or not) */
static int roof_side(const bldg *B, pt c, double u, double v, pt facing) {
    double nu = -sin(B->ang), nv = cos(B->ang);
    double side = (u - c.u) * nu + (v - c.v) * nv;
    double f = nu * facing.u + nv * facing.v;
    return (side * f) > 0 ? 1 : -1;
}

static float db2lin(double db) { return (float)pow(10.0, db / 10.0); }

/* SAR: out = 4 x S x S linear intensity */
static disopt_status render_sar(const scene *s, const layers *L, float *out) {
    int S = s->S;
    size_t N = (size_t)S * S;
    float *sig = malloc(N * 4 * sizeof *sig);
    float *g = malloc(N * 8 * sizeof *g), *tmp = malloc(N * 8 * sizeof *tmp);
    if (!sig || !g || !tmp) {
        free(sig), free(g), free(tmp);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "synth: out of memory");
    }
    double lay = 1.0 / tan(s->inc);
    /* per-class base backscatter, dB: HH, HV, VH, VV */
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            size_t i = (size_t)y * S + x;
            double u = (x + 0.5) * s->res, v = (y + 0.5) * s->res;
            double t = fbm(s->key + 101, u / 25, v / 25, 3) - 0.5;
            double co, cr, vv;
            switch (L->lc[i]) {
            case LC_WATER: {
                double w = fbm(s->key + 103, u / 40, v / 12, 3) - 0.5;
                co = -31 + 6 * w, cr = -40 + 4 * w, vv = co + 3;
                break;
            }
            case LC_ROAD: co = -20 + 2 * t, cr = -25.5 + 2 * t, vv = co + 0.5; break;
            case LC_PAVED: co = -17 + 3 * t, cr = -22.5 + 3 * t, vv = co + 0.5; break;
            case LC_BARE: co = -14 + 4 * t, cr = -19 + 4 * t, vv = co + 1; break;
            default: co = -12 + 4 * t, cr = -16.5 + 4 * t, vv = co + 1; break;
            }
            if (L->tree[i] > 0) { /* volume scattering: cross-pol only ~6 dB below co-pol */
                double c = fbm(s->key + 107, u / 3, v / 3, 3) - 0.5;
                co = -8 + 7 * c, cr = -13 + 7 * c, vv = co - 0.5;
            }
            sig[i] = db2lin(co), sig[N + i] = db2lin(cr), sig[2 * N + i] = db2lin(cr), sig[3 * N + i] = db2lin(vv);
        }
    /* trees shadow the ground behind them (away from the sensor) over about h tan(inc) / 2 */
    for (int k = 0; k < s->nt; k++) {
        const tree *t = &s->t[k];
        double off = 0.5 * t->h * tan(s->inc);
        pt c = {t->c.u - off * s->toward.u, t->c.v - off * s->toward.v};
        double rad = t->r + 0.5 * off;
        int x0 = (int)floor((c.u - t->r) / s->res), x1 = (int)ceil((c.u + t->r) / s->res);
        int y0 = (int)floor((c.v - rad) / s->res), y1 = (int)ceil((c.v + rad) / s->res);
        for (int y = y0 < 0 ? 0 : y0; y <= y1 && y < S; y++)
            for (int x = x0 < 0 ? 0 : x0; x <= x1 && x < S; x++) {
                double du = ((x + 0.5) * s->res - c.u) / t->r, dv = ((y + 0.5) * s->res - c.v) / rad;
                size_t i = (size_t)y * S + x;
                if (du * du + dv * dv > 1 || L->tree[i] > 0 || L->fp[i]) continue;
                for (int ch = 0; ch < 4; ch++) sig[ch * N + i] *= 0.12f;
            }
    }
    /* radar shadow and hidden ground, then facades and roofs laid over, then double bounce */
    for (size_t i = 0; i < N; i++)
        if (L->dark[i])
            for (int c = 0; c < 4; c++) sig[c * N + i] = 0;
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            size_t i = (size_t)y * S + x;
            int id = L->lay[i];
            if (id && L->fp[i] != id) {
                const bldg *B = &s->b[id - 1];
                /* height on the facade: distance back (away from the sensor) to the footprint */
                int steps = 0, max = (int)(B->h * lay / s->res) + 2;
                int sx = (int)lround(-s->toward.u), sy = (int)lround(-s->toward.v);
                int xx = x, yy = y;
                while (steps < max) {
                    xx += sx, yy += sy, steps++;
                    if (xx < 0 || yy < 0 || xx >= S || yy >= S) break;
                    if (L->fp[(size_t)yy * S + xx] == id) break;
                }
                double z = steps * s->res / lay;
                double floor_mod = fmod(z, 3.0) < 0.8 ? 2.5 : 0.6;
                double co = db2lin(B->facade_db) * floor_mod;
                sig[i] += (float)co, sig[3 * N + i] += (float)(co * 0.8);
                sig[N + i] += (float)(co * 0.2), sig[2 * N + i] += (float)(co * 0.2);
            }
            id = L->roof[i];
            if (id) {
                const bldg *B = &s->b[id - 1];
                double u = (x + 0.5) * s->res, v = (y + 0.5) * s->res;
                double dr = B->h * lay * (B->pitched ? 0.8 : 1.0);
                pt c = {B->c.u + dr * s->toward.u, B->c.v + dr * s->toward.v};
                double r = B->roof_db + 4 * (fbm(s->key + 109 + (uint64_t)id, u / 2, v / 2, 2) - 0.5);
                if (B->pitched) r += roof_side(B, c, u, v, s->toward) > 0 ? 5 : -5;
                if (B->ribs > 0) { /* metal ribs / skylights across the long axis */
                    double along = (u - c.u) * cos(B->ang) + (v - c.v) * sin(B->ang);
                    if (pmod(along, B->ribs) < 0.6) r += 7;
                }
                double co = db2lin(r);
                sig[i] += (float)co, sig[3 * N + i] += (float)(co * 1.1);
                sig[N + i] += (float)(co * 0.18), sig[2 * N + i] += (float)(co * 0.18);
            }
            float d0 = L->db[i], d1 = L->db[N + i];
            if (y > 0) d0 += 0.3f * L->db[i - S], d1 += 0.3f * L->db[N + i - S];
            if (y + 1 < S) d0 += 0.3f * L->db[i + S], d1 += 0.3f * L->db[N + i + S];
            if (d0 > 0) {
                sig[i] += d0, sig[3 * N + i] += d0 * 0.55f;
                sig[N + i] += d1, sig[2 * N + i] += d1;
            }
        }
    /* objects: vehicles, containers and ships are bright distributed targets too */
    for (size_t i = 0; i < N; i++) {
        int id = L->objs[i];
        if (!id) continue;
        const obj *o = &s->o[id - 1];
        double co = o->type == OBJ_VEHICLE ? -3 : o->type == OBJ_CONTAINER ? 4 : -4;
        sig[i] = db2lin(co), sig[3 * N + i] = db2lin(co - 1);
        sig[N + i] = sig[2 * N + i] = db2lin(co - 8);
    }
    /* speckle: L looks of correlated complex Gaussians, smoothed [1 2 1]/4 in x and y (the impulse
     * response spreads each scatterer over neighbouring pixels) and renormalised to unit power */
    rng r = rng_make(s->key, (uint64_t)s->index, 3);
    float *acc = out;
    memset(acc, 0, N * 4 * sizeof *acc);
    const double rho_co = 0.6, rho_x = 0.85;
    for (int l = 0; l < s->looks; l++) {
        for (size_t i = 0; i < N * 4; i++) {
            double a, b;
            normal2(&r, &a, &b);
            g[2 * i] = (float)a, g[2 * i + 1] = (float)b;
        }
        /* separable smoothing of 8 float planes interleaved as (field, re/im) per pixel */
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                for (int k = 0; k < 8; k++) {
                    int xl = x > 0 ? x - 1 : x, xr = x + 1 < S ? x + 1 : x;
                    tmp[((size_t)y * S + x) * 8 + k] = 0.25f * g[((size_t)y * S + xl) * 8 + k] +
                                                       0.5f * g[((size_t)y * S + x) * 8 + k] +
                                                       0.25f * g[((size_t)y * S + xr) * 8 + k];
                }
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                for (int k = 0; k < 8; k++) {
                    int yu = y > 0 ? y - 1 : y, yd = y + 1 < S ? y + 1 : y;
                    g[((size_t)y * S + x) * 8 + k] = (0.25f * tmp[((size_t)yu * S + x) * 8 + k] +
                                                      0.5f * tmp[((size_t)y * S + x) * 8 + k] +
                                                      0.25f * tmp[((size_t)yd * S + x) * 8 + k]) /
                                                     0.375f;
                }
        for (size_t i = 0; i < N; i++) {
            const float *z = g + i * 8; /* z0..z3 complex: HH, VV-independent, HV, VH-independent */
            double hh_r = z[0], hh_i = z[1];
            double vv_r = rho_co * z[0] + sqrt(1 - rho_co * rho_co) * z[2];
            double vv_i = rho_co * z[1] + sqrt(1 - rho_co * rho_co) * z[3];
            double hv_r = z[4], hv_i = z[5];
            double vh_r = rho_x * z[4] + sqrt(1 - rho_x * rho_x) * z[6];
            double vh_i = rho_x * z[5] + sqrt(1 - rho_x * rho_x) * z[7];
            /* E|z|^2 = 2 for one complex Gaussian of unit-variance parts */
            acc[i] += (float)(0.5 * (hh_r * hh_r + hh_i * hh_i));
            acc[N + i] += (float)(0.5 * (hv_r * hv_r + hv_i * hv_i));
            acc[2 * N + i] += (float)(0.5 * (vh_r * vh_r + vh_i * vh_i));
            acc[3 * N + i] += (float)(0.5 * (vv_r * vv_r + vv_i * vv_i));
        }
    }
    const float nesz = db2lin(-25);
    for (size_t i = 0; i < N * 4; i++) acc[i] = (float)((sig[i] + nesz) * (acc[i] / s->looks));
    /* point targets: not speckled; a main lobe and sidelobes along range and azimuth */
    for (int k = 0; k < s->np; k++) {
        const point_target *p = &s->p[k];
        double d = p->h * lay;
        double u = p->p.u + d * s->toward.u, v = p->p.v + d * s->toward.v;
        int x = (int)floor(u / s->res), y = (int)floor(v / s->res);
        if (x < 0 || y < 0 || x >= S || y >= S) continue;
        double a = p->amp;
        double pol[4] = {1.0, 0.08 + 0.1 * lattice(s->key + 5, k, 0), 0, 0.5 + lattice(s->key + 5, k, 1)};
        pol[2] = pol[1];
        for (int c = 0; c < 4; c++) {
            float *o = acc + (size_t)c * N;
            o[(size_t)y * S + x] += (float)(a * pol[c]);
            for (int m = 1; m <= 6; m++) {
                double sl = a * pol[c] * (m == 1 ? 0.25 : 0.03 / (m * m));
                if (x - m >= 0) o[(size_t)y * S + x - m] += (float)sl;
                if (x + m < S) o[(size_t)y * S + x + m] += (float)sl;
                if (y - m >= 0) o[(size_t)(y - m) * S + x] += (float)sl;
                if (y + m < S) o[(size_t)(y + m) * S + x] += (float)sl;
            }
        }
    }
    free(sig), free(g), free(tmp);
    return DISOPT_OK;
}

static unsigned char clamp_byte(double x) { return x < 1 ? 1 : x > 255 ? 255 : (unsigned char)lround(x); }

/* optical: out = 3 x S x S bytes */
static void render_optical(const scene *s, const layers *L, unsigned char *out) {
    int S = s->S;
    size_t N = (size_t)S * S;
    rng r = rng_make(s->key, (uint64_t)s->index, 4);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            size_t i = (size_t)y * S + x;
            double u = (x + 0.5) * s->res, v = (y + 0.5) * s->res;
            double t = fbm(s->key + 201, u / 15, v / 15, 4);
            double c[3];
            switch (L->lc[i]) {
            case LC_WATER: {
                double w = fbm(s->key + 203, u / 30, v / 8, 3);
                c[0] = 30 + 20 * w, c[1] = 48 + 22 * w, c[2] = 58 + 20 * w;
                break;
            }
            case LC_ROAD: {
                c[0] = c[1] = 92 + 30 * t, c[2] = 97 + 30 * t;
                double a, b;
                to_ab(s, u, v, &a, &b);
                double ma = pmod(a - s->off_a, s->sp_a), mb = pmod(b - s->off_b, s->sp_b);
                if ((fabs(ma - s->road_w / 2) < 0.15 && pmod(b, 6) < 3 && mb >= s->road_w) ||
                    (fabs(mb - s->road_w / 2) < 0.15 && pmod(a, 6) < 3 && ma >= s->road_w))
                    c[0] = c[1] = c[2] = 215;
                break;
            }
            case LC_PAVED: c[0] = 128 + 40 * t, c[1] = 126 + 40 * t, c[2] = 120 + 40 * t; break;
            case LC_BARE: c[0] = 140 + 40 * t, c[1] = 128 + 36 * t, c[2] = 100 + 30 * t; break;
            default: c[0] = 72 + 45 * t, c[1] = 90 + 45 * t, c[2] = 58 + 30 * t; break;
            }
            int id = L->fp[i];
            if (id) {
                const bldg *B = &s->b[id - 1];
                double k = 0.92 + 0.16 * fbm(s->key + 207, u / 3, v / 3, 2);
                if (B->pitched) {
                    pt sun = {-s->sun_shadow.u, -s->sun_shadow.v};
                    k *= roof_side(B, B->c, u, v, sun) > 0 ? 1.12 : 0.78;
                }
                /* parapet / eaves: one pixel darker at the roof's edge */
                if ((x > 0 && L->fp[i - 1] != id) || (x + 1 < S && L->fp[i + 1] != id) ||
                    (y > 0 && L->fp[i - S] != id) || (y + 1 < S && L->fp[i + S] != id))
                    k *= 0.7;
                for (int m = 0; m < 3; m++) c[m] = B->rgb[m] * k;
            }
            int sid = L->sun[i];
            if (sid && L->fp[i] != sid && !(L->fp[i] && s->b[L->fp[i] - 1].h > s->b[sid - 1].h))
                for (int m = 0; m < 3; m++) c[m] *= 0.42;
            int oid = L->objs[i];
            if (oid) {
                const obj *o = &s->o[oid - 1];
                double k = o->type == OBJ_SHIP ? 0.9 + 0.1 * fbm(s->key + 211, u / 2, v / 2, 1) : 1.0;
                for (int m = 0; m < 3; m++) c[m] = o->rgb[m] * k;
            }
            if (L->tree[i] > 0) {
                double g = fbm(s->key + 213, u / 2.5, v / 2.5, 3);
                double k = L->tshade[i] * (0.8 + 0.4 * g);
                c[0] = 44 * k, c[1] = 74 * k, c[2] = 38 * k;
            }
            double nz = (unif(&r) - 0.5) * 8;
            c[2] += 9; /* haze: the real PS-RGB tile is bluer (band means 94 / 97 / 90) */
            for (int m = 0; m < 3; m++) out[m * N + i] = clamp_byte(c[m] + nz);
        }
    /* tree shadows: a disc offset along the sun-shadow direction, on ground pixels outside crowns */
    for (int k = 0; k < s->nt; k++) {
        const tree *t = &s->t[k];
        double off = t->h / tan(s->sun_elev) * 0.6;
        pt c = {t->c.u + off * s->sun_shadow.u, t->c.v + off * s->sun_shadow.v};
        int x0 = (int)floor((c.u - t->r) / s->res), x1 = (int)ceil((c.u + t->r) / s->res);
        int y0 = (int)floor((c.v - t->r) / s->res), y1 = (int)ceil((c.v + t->r) / s->res);
        for (int y = y0 < 0 ? 0 : y0; y <= y1 && y < S; y++)
            for (int x = x0 < 0 ? 0 : x0; x <= x1 && x < S; x++) {
                double du = (x + 0.5) * s->res - c.u, dv = (y + 0.5) * s->res - c.v;
                size_t i = (size_t)y * S + x;
                if (du * du + dv * dv > t->r * t->r || L->tree[i] > 0 || L->fp[i]) continue;
                for (int m = 0; m < 3; m++) out[m * N + i] = clamp_byte(out[m * N + i] * 0.55);
            }
    }
}

/* ---------------------------------------------------------------- writing */
static OGRSpatialReferenceH utm31n(void) {
    OGRSpatialReferenceH srs = OSRNewSpatialReference(NULL);
    if (srs && OSRImportFromEPSG(srs, EPSG_UTM31N) != OGRERR_NONE) {
        OSRDestroySpatialReference(srs);
        return NULL;
    }
    if (srs) OSRSetAxisMappingStrategy(srs, OAMS_TRADITIONAL_GIS_ORDER);
    return srs;
}

static disopt_status write_raster(const scene *s, const char *path, GDALDataType dt, int nbands, const void *data,
                                  const char *const *band_names, const char *const *md) {
    GDALDriverH gtiff = GDALGetDriverByName("GTiff");
    if (!gtiff) return dp_error(DISOPT_ERR_UNSUPPORTED, "synth: GDAL's GTiff driver is missing");
    char **co = CSLSetNameValue(NULL, "INTERLEAVE", "BAND");
    if (dt == GDT_Byte) co = CSLSetNameValue(co, "PHOTOMETRIC", "RGB");
    GDALDatasetH ds = GDALCreate(gtiff, path, s->S, s->S, nbands, dt, co);
    CSLDestroy(co);
    if (!ds) return dp_error(DISOPT_ERR_IO, "synth: cannot create %s: %s", path, CPLGetLastErrorMsg());
    disopt_status st = DISOPT_OK;
    double gt[6] = {s->x0, s->res, 0, s->ytop, 0, -s->res};
    OGRSpatialReferenceH srs = utm31n();
    if (!srs || GDALSetGeoTransform(ds, gt) != CE_None || GDALSetSpatialRef(ds, srs) != CE_None)
        st = dp_error(DISOPT_ERR_IO, "synth: georeferencing %s: %s", path, CPLGetLastErrorMsg());
    if (srs) OSRDestroySpatialReference(srs);
    for (int k = 0; st == DISOPT_OK && md && md[k]; k++) {
        char *key = NULL;
        const char *val = CPLParseNameValue(md[k], &key);
        if (key && val && GDALSetMetadataItem(ds, key, val, NULL) != CE_None)
            st = dp_error(DISOPT_ERR_IO, "synth: metadata on %s: %s", path, CPLGetLastErrorMsg());
        CPLFree(key);
    }
    for (int b = 1; st == DISOPT_OK && b <= nbands; b++) {
        GDALRasterBandH band = GDALGetRasterBand(ds, b);
        if (GDALSetRasterNoDataValue(band, 0) != CE_None)
            st = dp_error(DISOPT_ERR_IO, "synth: nodata on %s: %s", path, CPLGetLastErrorMsg());
        if (band_names) GDALSetDescription(band, band_names[b - 1]);
    }
    int sz = GDALGetDataTypeSizeBytes(dt);
    if (st == DISOPT_OK &&
        GDALDatasetRasterIO(ds, GF_Write, 0, 0, s->S, s->S, (void *)data, s->S, s->S, dt, nbands, NULL, sz,
                            (GSpacing)sz * s->S, (GSpacing)sz * s->S * s->S) != CE_None)
        st = dp_error(DISOPT_ERR_IO, "synth: writing %s: %s", path, CPLGetLastErrorMsg());
    GDALClose(ds);
    if (st == DISOPT_OK && CPLGetLastErrorType() == CE_Failure)
        st = dp_error(DISOPT_ERR_IO, "synth: closing %s: %s", path, CPLGetLastErrorMsg());
    return st;
}

static disopt_status write_geojson(const scene *s, const char *path, int *count) {
    *count = 0;
    GDALDriverH drv = GDALGetDriverByName("GeoJSON");
    if (!drv) return dp_error(DISOPT_ERR_UNSUPPORTED, "synth: GDAL's GeoJSON driver is missing");
    VSIUnlink(path);
    GDALDatasetH ds = GDALCreate(drv, path, 0, 0, 0, GDT_Unknown, NULL);
    if (!ds) return dp_error(DISOPT_ERR_IO, "synth: cannot create %s: %s", path, CPLGetLastErrorMsg());
    OGRSpatialReferenceH srs = utm31n();
    char **lco = CSLSetNameValue(NULL, "COORDINATE_PRECISION", "3");
    OGRLayerH lyr = srs ? GDALDatasetCreateLayer(ds, "buildings", srs, wkbPolygon, lco) : NULL;
    CSLDestroy(lco);
    if (srs) OSRDestroySpatialReference(srs);
    disopt_status st = DISOPT_OK;
    if (!lyr) st = dp_error(DISOPT_ERR_IO, "synth: layer in %s: %s", path, CPLGetLastErrorMsg());
    OGRFieldDefnH f1 = OGR_Fld_Create("building_id", OFTInteger), f2 = OGR_Fld_Create("height_m", OFTReal);
    if (st == DISOPT_OK && (OGR_L_CreateField(lyr, f1, 1) != OGRERR_NONE || OGR_L_CreateField(lyr, f2, 1) != OGRERR_NONE))
        st = dp_error(DISOPT_ERR_IO, "synth: fields in %s: %s", path, CPLGetLastErrorMsg());
    OGR_Fld_Destroy(f1), OGR_Fld_Destroy(f2);
    pt tile[4] = {{0, 0}, {s->W, 0}, {s->W, s->W}, {0, s->W}};
    OGRGeometryH clip = st == DISOPT_OK ? make_poly(s, tile, 4) : NULL;
    if (st == DISOPT_OK && !clip) st = dp_error(DISOPT_ERR_INTERNAL, "synth: OGR could not build a geometry");
    for (int i = 0; st == DISOPT_OK && i < s->nb; i++) {
        const bldg *B = &s->b[i];
        int inside = 1; /* else clipped (a polygon with every corner outside may still cross the tile) */
        for (int k = 0; k < B->npoly; k++)
            inside &= B->poly[k].u > 0 && B->poly[k].v > 0 && B->poly[k].u < s->W && B->poly[k].v < s->W;
        OGRGeometryH g = make_poly(s, B->poly, B->npoly);
        if (!g) {
            st = dp_error(DISOPT_ERR_INTERNAL, "synth: OGR could not build a geometry");
            break;
        }
        OGRGeometryH c = inside ? g : OGR_G_Intersection(g, clip);
        if (!inside) OGR_G_DestroyGeometry(g);
        if (!c) continue;
        int nparts = 1;
        OGRwkbGeometryType gt = wkbFlatten(OGR_G_GetGeometryType(c));
        if (gt == wkbMultiPolygon || gt == wkbGeometryCollection) nparts = OGR_G_GetGeometryCount(c);
        else if (gt != wkbPolygon) nparts = 0;
        for (int p = 0; st == DISOPT_OK && p < nparts; p++) {
            OGRGeometryH part = (gt == wkbPolygon) ? c : OGR_G_GetGeometryRef(c, p);
            if (wkbFlatten(OGR_G_GetGeometryType(part)) != wkbPolygon || OGR_G_Area(part) < 0.01) continue;
            OGRFeatureH feat = OGR_F_Create(OGR_L_GetLayerDefn(lyr));
            if (!feat) {
                st = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "synth: out of memory");
                break;
            }
            OGR_F_SetFieldInteger(feat, 0, i);
            OGR_F_SetFieldDouble(feat, 1, floor(B->h * 10 + 0.5) / 10);
            if (OGR_F_SetGeometry(feat, part) != OGRERR_NONE || OGR_L_CreateFeature(lyr, feat) != OGRERR_NONE)
                st = dp_error(DISOPT_ERR_IO, "synth: feature in %s: %s", path, CPLGetLastErrorMsg());
            else
                (*count)++;
            OGR_F_Destroy(feat);
        }
        OGR_G_DestroyGeometry(c);
    }
    if (clip) OGR_G_DestroyGeometry(clip);
    GDALClose(ds);
    return st;
}

/* ---------------------------------------------------------------- public */
void disopt_synth_options_init(disopt_synth_options *o) {
    memset(o, 0, sizeof *o);
    o->num_tiles = 8;
    o->size = 900;
    o->res = 0.5;
    o->seed = 1;
    o->split[0] = 0.7, o->split[1] = 0.15, o->split[2] = 0.15;
    o->origin_x = 594000;
    o->origin_y = 5750000;
    o->grid_columns = 10;
}

const char *disopt_synth_scene_name(disopt_synth_scene s) {
    switch (s) {
    case DISOPT_SYNTH_SUBURBAN: return "suburban";
    case DISOPT_SYNTH_DENSE: return "dense";
    case DISOPT_SYNTH_INDUSTRIAL: return "industrial";
    case DISOPT_SYNTH_PORT: return "port";
    }
    return "?";
}

const char *disopt_synth_split_name(disopt_synth_split s) {
    switch (s) {
    case DISOPT_SYNTH_TRAIN: return "train";
    case DISOPT_SYNTH_VAL: return "val";
    case DISOPT_SYNTH_TEST: return "test";
    }
    return "?";
}

static void strip_id(uint64_t seed, int strip, char *buf, size_t len) {
    time_t t0 = (time_t)1567324800 + (time_t)(mix64(seed) % 3600) + (time_t)strip * 437; /* 2019-09-01 08:00 */
    time_t t1 = t0 + 150 + (time_t)(mix64(seed + (uint64_t)strip) % 60);
    struct tm a, b;
    char s0[16], s1[16];
    gmtime_r(&t0, &a);
    gmtime_r(&t1, &b);
    strftime(s0, sizeof s0, "%Y%m%d%H%M%S", &a);
    strftime(s1, sizeof s1, "%Y%m%d%H%M%S", &b);
    snprintf(buf, len, "%s_%s", s0, s1);
}

static int is_dir(const char *p) {
    VSIStatBufL st;
    return VSIStatL(p, &st) == 0 && VSI_ISDIR(st.st_mode);
}

/* dir and every missing folder above it, one component at a time (GDAL 3.6's VSIMkdirRecursive fails on a
 * relative path whose first component is missing) */
static disopt_status mkdir_p(const char *dir) {
    char buf[4096];
    const size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf) return dp_error(DISOPT_ERR_IO, "synth: bad directory name '%s'", dir);
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        const char c = buf[i];
        buf[i] = '\0';
        if (!is_dir(buf) && VSIMkdir(buf, 0755) != 0 && !is_dir(buf))
            return dp_error(DISOPT_ERR_IO, "synth: cannot create directory %s", buf);
        buf[i] = c;
    }
    return DISOPT_OK;
}

#define PREFIX "SN6synth_AOI_11_Rotterdam"

static disopt_status one_tile(const disopt_synth_options *o, const char *dir, int index, disopt_synth_tile_info *ti) {
    scene s;
    memset(&s, 0, sizeof s);
    layers L;
    memset(&L, 0, sizeof L);
    disopt_status st = build_scene(&s, o, index);
    size_t N = (size_t)o->size * o->size;
    float *sar = NULL;
    unsigned char *rgb = NULL;
    char path[4096];
    if (st == DISOPT_OK) st = make_layers(&s, &L);
    if (st == DISOPT_OK) {
        sar = malloc(N * 4 * sizeof *sar);
        rgb = malloc(N * 3);
        if (!sar || !rgb) st = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "synth: out of memory");
    }
    if (st == DISOPT_OK) st = render_sar(&s, &L, sar);
    if (st == DISOPT_OK) {
        render_optical(&s, &L, rgb);
        /* to SN6-like values; strip edges (no data) in some tiles, independently for SAR and optical */
        for (size_t i = 0; i < N * 4; i++) {
            double v = DISOPT_SYNTH_DB_SCALE * 10.0 * log10((double)sar[i] > 1e-30 ? (double)sar[i] : 1e-30) +
                       DISOPT_SYNTH_DB_OFFSET;
            sar[i] = (float)(v < DISOPT_SYNTH_MIN_VALUE ? DISOPT_SYNTH_MIN_VALUE
                             : v > DISOPT_SYNTH_MAX_VALUE ? DISOPT_SYNTH_MAX_VALUE
                                                          : v);
        }
        rng r = rng_make(o->seed, (uint64_t)index, 5);
        for (int img = 0; img < 2; img++) {
            if (unif(&r) >= (img ? 0.3 : 0.25)) continue;
            /* a near-straight strip edge: from the top or bottom (SAR strips run east-west) or diagonal (optical) */
            double slope = img ? urange(&r, -0.8, 0.8) : urange(&r, -0.05, 0.05);
            double y0 = urange(&r, 0.1, 0.45) * o->size;
            int top = unif(&r) < 0.5;
            for (int y = 0; y < o->size; y++)
                for (int x = 0; x < o->size; x++) {
                    double e = y0 + slope * (x - o->size / 2.0);
                    int nod = top ? y < e : y > o->size - e;
                    if (!nod) continue;
                    size_t i = (size_t)y * o->size + x;
                    if (img) rgb[i] = rgb[N + i] = rgb[2 * N + i] = 0;
                    else sar[i] = sar[N + i] = sar[2 * N + i] = sar[3 * N + i] = 0;
                }
        }
    }
    if (st == DISOPT_OK) {
        memset(ti, 0, sizeof *ti);
        strip_id(o->seed, index / 2, ti->strip, sizeof ti->strip);
        snprintf(ti->name, sizeof ti->name, "%s_tile_%d", ti->strip, index);
        ti->orientation = s.orientation;
        ti->scene = s.scene;
        ti->incidence_deg = s.inc * 180 / PI;
        static const char *const sar_names[4] = {"HH", "HV", "VH", "VV"};
        snprintf(path, sizeof path, "%s/SAR-Intensity/" PREFIX "_SAR-Intensity_%s.tif", dir, ti->name);
        char md[4][64];
        snprintf(md[0], sizeof md[0], "SYNTH_ORIENTATION=%d", s.orientation);
        snprintf(md[1], sizeof md[1], "SYNTH_INCIDENCE_DEG=%.3f", ti->incidence_deg);
        snprintf(md[2], sizeof md[2], "SYNTH_LOOKS=%d", s.looks);
        snprintf(md[3], sizeof md[3], "SYNTH_SCENE=%s", disopt_synth_scene_name(s.scene));
        const char *mdl[5] = {md[0], md[1], md[2], md[3], NULL};
        st = write_raster(&s, path, GDT_Float32, 4, sar, sar_names, mdl);
    }
    if (st == DISOPT_OK) {
        static const char *const rgb_names[3] = {"Red", "Green", "Blue"};
        snprintf(path, sizeof path, "%s/PS-RGB/" PREFIX "_PS-RGB_%s.tif", dir, ti->name);
        st = write_raster(&s, path, GDT_Byte, 3, rgb, rgb_names, NULL);
    }
    if (st == DISOPT_OK) {
        snprintf(path, sizeof path, "%s/geojson_buildings/" PREFIX "_Buildings_%s.geojson", dir, ti->name);
        st = write_geojson(&s, path, &ti->num_buildings);
    }
    free(sar), free(rgb);
    layers_free(&L);
    scene_free(&s);
    return st;
}

disopt_status disopt_synth_generate(const char *out_dir, const disopt_synth_options *o, GDALProgressFunc progress,
                                    void *progress_data, disopt_synth_tile_info *info) {
    if (!out_dir || !o) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "synth: NULL argument");
    if (o->num_tiles < 1 || o->num_tiles > 1000000)
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "synth: tiles must be in 1..1000000, not %d", o->num_tiles);
    if (o->size < 32 || o->size > 4096) /* about 150 bytes of working memory per pixel */
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "synth: size must be in 32..4096, not %d", o->size);
    if (!(o->res >= 0.1 && o->res <= 5))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "synth: resolution must be in 0.1..5 m, not %g", o->res);
    double sum = o->split[0] + o->split[1] + o->split[2];
    if (!(o->split[0] >= 0 && o->split[1] >= 0 && o->split[2] >= 0 && fabs(sum - 1) < 1e-6))
        return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "synth: split fractions must be >= 0 and sum to 1");
    if (!GDALGetDriverByName("GTiff") || !GDALGetDriverByName("MEM") || !GDALGetDriverByName("GeoJSON"))
        return dp_error(DISOPT_ERR_UNSUPPORTED, "synth: GDAL drivers GTiff, MEM and GeoJSON are needed "
                                                "(call GDALAllRegister first)");
    static const char *const sub[3] = {"SAR-Intensity", "PS-RGB", "geojson_buildings"};
    char path[4096];
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/%s", out_dir, sub[k]);
        DP_TRY(mkdir_p(path));
    }
    int n = o->num_tiles;
    disopt_synth_tile_info *ti = info ? info : calloc((size_t)n, sizeof *ti);
    int *perm = malloc((size_t)n * sizeof *perm);
    if (!ti || !perm) {
        if (!info) free(ti);
        free(perm);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "synth: out of memory");
    }
    /* split: exact counts, tiles assigned by a seeded permutation */
    rng r = rng_make(o->seed, 0xFFFFFFFFull, 6);
    for (int i = 0; i < n; i++) perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(unif(&r) * (i + 1));
        int t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int n_val = (int)floor(n * o->split[1] + 0.5), n_test = (int)floor(n * o->split[2] + 0.5);
    if (n_val + n_test > n) n_test = n - n_val;
    disopt_status st = DISOPT_OK;
    for (int i = 0; st == DISOPT_OK && i < n; i++) {
        st = one_tile(o, out_dir, i, &ti[i]);
        if (progress && !progress((i + 1.0) / n, "", progress_data))
            st = dp_error(DISOPT_ERR_CANCELLED, "synth: cancelled");
    }
    for (int k = 0; st == DISOPT_OK && k < n; k++)
        ti[perm[k]].split = k < n_val ? DISOPT_SYNTH_VAL : k < n_val + n_test ? DISOPT_SYNTH_TEST : DISOPT_SYNTH_TRAIN;
    if (st == DISOPT_OK) {
        snprintf(path, sizeof path, "%s/tiles.csv", out_dir);
        VSILFILE *f = VSIFOpenL(path, "wb");
        if (!f) st = dp_error(DISOPT_ERR_IO, "synth: cannot write %s", path);
        else {
            int ok = VSIFPrintfL(f, "sar,optical,label,split,orientation,scene,strip\n") > 0;
            for (int i = 0; ok && i < n; i++)
                ok = VSIFPrintfL(f,
                                 "SAR-Intensity/" PREFIX "_SAR-Intensity_%s.tif,PS-RGB/" PREFIX
                                 "_PS-RGB_%s.tif,geojson_buildings/" PREFIX "_Buildings_%s.geojson,%s,%d,%s,%s\n",
                                 ti[i].name, ti[i].name, ti[i].name, disopt_synth_split_name(ti[i].split),
                                 ti[i].orientation, disopt_synth_scene_name(ti[i].scene), ti[i].strip) > 0;
            if (VSIFCloseL(f) != 0 || !ok) st = dp_error(DISOPT_ERR_IO, "synth: writing %s failed", path);
        }
    }
    if (st == DISOPT_OK) {
        snprintf(path, sizeof path, "%s/SAR_orientations.txt", out_dir);
        VSILFILE *f = VSIFOpenL(path, "wb");
        if (!f) st = dp_error(DISOPT_ERR_IO, "synth: cannot write %s", path);
        else {
            int ok = 1;
            for (int i = 0; ok && i < n; i += 2) ok = VSIFPrintfL(f, "%s %d\n", ti[i].strip, ti[i].orientation) > 0;
            if (VSIFCloseL(f) != 0 || !ok) st = dp_error(DISOPT_ERR_IO, "synth: writing %s failed", path);
        }
    }
    if (!info) free(ti);
    free(perm);
    return st;
}

/* ---------------------------------------------------------------- statistics */
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

disopt_status disopt_sar_stats_compute(const char *path, int sn6_values, int block, disopt_sar_stats *out) {
    if (!path || !out || block < 1) return dp_error(DISOPT_ERR_INVALID_ARGUMENT, "sar stats: bad argument");
    memset(out, 0, sizeof *out);
    GDALDatasetH ds = GDALOpen(path, GA_ReadOnly);
    if (!ds) return dp_error(DISOPT_ERR_IO, "sar stats: cannot open %s: %s", path, CPLGetLastErrorMsg());
    if (GDALGetRasterCount(ds) < 4) {
        GDALClose(ds);
        return dp_error(DISOPT_ERR_INPUT, "sar stats: %s has fewer than 4 bands", path);
    }
    int W = GDALGetRasterXSize(ds), H = GDALGetRasterYSize(ds);
    size_t N = (size_t)W * H;
    float *v = malloc(N * 4 * sizeof *v);
    if (!v) {
        GDALClose(ds);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "sar stats: out of memory");
    }
    disopt_status st = DISOPT_OK;
    int has_nd[4];
    double nd[4];
    for (int b = 0; b < 4 && st == DISOPT_OK; b++) {
        GDALRasterBandH band = GDALGetRasterBand(ds, b + 1);
        nd[b] = GDALGetRasterNoDataValue(band, &has_nd[b]);
        if (GDALRasterIO(band, GF_Read, 0, 0, W, H, v + b * N, W, H, GDT_Float32, 0, 0) != CE_None)
            st = dp_error(DISOPT_ERR_IO, "sar stats: reading %s: %s", path, CPLGetLastErrorMsg());
    }
    GDALClose(ds);
    /* to linear intensity; NaN marks nodata */
    for (size_t i = 0; st == DISOPT_OK && i < N; i++) {
        int bad = 0;
        for (int b = 0; b < 4; b++) {
            float x = v[b * N + i];
            if (isnan(x) || (has_nd[b] && x == (float)nd[b]) || (sn6_values && x == 0)) bad = 1;
        }
        for (int b = 0; b < 4; b++) {
            double db = sn6_values ? (v[b * N + i] - DISOPT_SYNTH_DB_OFFSET) / DISOPT_SYNTH_DB_SCALE : v[b * N + i];
            v[b * N + i] = bad ? NAN : (float)pow(10.0, db / 10);
        }
    }
    /* multilook */
    int w = W / block, h = H / block;
    float *m = v;
    if (st == DISOPT_OK && block > 1) {
        m = malloc((size_t)w * h * 4 * sizeof *m);
        if (!m) st = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "sar stats: out of memory");
        for (int b = 0; m && b < 4; b++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    double s = 0;
                    int bad = 0;
                    for (int dy = 0; dy < block; dy++)
                        for (int dx = 0; dx < block; dx++) {
                            float q = v[b * N + (size_t)(y * block + dy) * W + x * block + dx];
                            if (isnan(q)) bad = 1;
                            s += q;
                        }
                    m[(size_t)b * w * h + (size_t)y * w + x] = bad ? NAN : (float)(s / (block * block));
                }
    } else {
        w = W, h = H;
    }
    size_t M = (size_t)w * h;
    double *tmp = st == DISOPT_OK ? malloc(M * sizeof *tmp) : NULL;
    if (st == DISOPT_OK && !tmp) st = dp_error(DISOPT_ERR_OUT_OF_MEMORY, "sar stats: out of memory");
    out->bands = 4;
    out->total = (int64_t)M;
    static const double P[7] = {1, 5, 25, 50, 75, 95, 99};
    size_t nv = 0;
    for (int b = 0; st == DISOPT_OK && b < 4; b++) {
        nv = 0;
        double s = 0, s2 = 0;
        for (size_t i = 0; i < M; i++) {
            float q = m[(size_t)b * M + i];
            if (isnan(q)) continue;
            double db = 10 * log10(q > 1e-30f ? q : 1e-30f);
            tmp[nv++] = db;
            s += db, s2 += db * db;
        }
        if (nv == 0) {
            st = dp_error(DISOPT_ERR_INPUT, "sar stats: no valid pixel in %s", path);
            break;
        }
        qsort(tmp, nv, sizeof *tmp, cmp_double);
        disopt_sar_band_stats *bs = &out->band[b];
        bs->min = tmp[0], bs->max = tmp[nv - 1], bs->mean = s / nv;
        bs->std = sqrt(fmax(0, s2 / nv - bs->mean * bs->mean));
        for (int k = 0; k < 7; k++) bs->pct[k] = tmp[(size_t)floor(P[k] / 100 * (nv - 1) + 0.5)];
    }
    if (st == DISOPT_OK) {
        out->valid = (int64_t)nv;
        double d12 = 0, d23 = 0, sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
        size_t k = 0;
        for (size_t i = 0; i < M; i++) {
            if (isnan(m[i])) continue;
            double a = 10 * log10(fmax(m[i], 1e-30)), bb = 10 * log10(fmax(m[M + i], 1e-30)),
                   c = 10 * log10(fmax(m[2 * M + i], 1e-30));
            d12 += a - bb, d23 += fabs(bb - c);
            sa += bb, sb += c, saa += bb * bb, sbb += c * c, sab += bb * c;
            k++;
        }
        out->hh_minus_hv = d12 / k;
        out->hv_minus_vh_abs = d23 / k;
        double cov = sab / k - (sa / k) * (sb / k), va = saa / k - (sa / k) * (sa / k), vb = sbb / k - (sb / k) * (sb / k);
        out->corr_hv_vh = cov / sqrt(va * vb);
        /* coefficient of variation of linear HH in 7x7 windows; the most homogeneous 10 % */
        size_t nw = 0;
        for (int y = 0; y + 7 <= h; y += 4)
            for (int x = 0; x + 7 <= w; x += 4) {
                double s = 0, s2 = 0;
                int bad = 0;
                for (int dy = 0; dy < 7 && !bad; dy++)
                    for (int dx = 0; dx < 7; dx++) {
                        double q = m[(size_t)(y + dy) * w + x + dx];
                        if (isnan(q)) {
                            bad = 1;
                            break;
                        }
                        s += q, s2 += q * q;
                    }
                if (bad) continue;
                double mu = s / 49, var = s2 / 49 - mu * mu;
                if (mu > 0 && nw < M) tmp[nw++] = sqrt(fmax(var, 0)) / mu;
            }
        if (nw > 0) {
            qsort(tmp, nw, sizeof *tmp, cmp_double);
            out->cv_homog = tmp[(size_t)(nw * 0.05)];
            out->enl_homog = 1 / (out->cv_homog * out->cv_homog);
        }
    }
    free(tmp);
    if (m != v) free(m);
    free(v);
    return st;
}
