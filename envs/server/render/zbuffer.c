/* Box rasterizer of the embedded simulator's cameras: oriented boxes -> face-id and depth buffers.

   One call per camera (`draw_boxes`), loaded with ctypes by `envs/server/render/native.py`, which releases the
   GIL for its duration. For every box: cull it (draw distance, sub-pixel size, view frustum), pick its front
   faces from where the camera sits in the box's frame, clip each face to the near plane, project it, and fill
   it row by row into a z-buffer that starts as the ground plane's depth, so occlusion is exact per pixel
   (boxes against boxes and against the ground). Depth is CARLA's: the distance along the camera's forward
   axis, evaluated per pixel from the face's plane along the pixel's ray.

   Camera frame: x forward, y right, z up. Pixel (i, j) looks along the ray (1, a_i, b_j) with
   a_i = (i + 0.5 - W/2) / f and b_j = -(j + 0.5 - H/2) / f. A face id is 6 * box + face + 1 (0: no box). */
#include <math.h>
#include <stdint.h>

/* Faces in the order of boxes.FACE_NORMALS (face ids depend on it), each with its corners in cyclic order.
   Corner k of a box has signs ((k >> 2) & 1, (k >> 1) & 1, k & 1) -> (-1 | +1) along its local x, y, z. */
static const int FACE_CORNERS[6][4] = {
    {4, 6, 7, 5}, /* front  +x */
    {0, 1, 3, 2}, /* back   -x */
    {2, 3, 7, 6}, /* right  +y */
    {0, 4, 5, 1}, /* left   -y */
    {1, 5, 7, 3}, /* top    +z */
    {0, 2, 6, 4}, /* bottom -z */
};
static const double FACE_NORMALS[6][3] = {{1, 0, 0}, {-1, 0, 0}, {0, 1, 0}, {0, -1, 0}, {0, 0, 1}, {0, 0, -1}};

#define MAX_POLY 8

static double clamp(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }
#define BIG 1e30 /* the file is built with -ffast-math, which assumes no infinities */

typedef struct {
  int width, height;
  double focal, near;
  const float* ground_depth;
  int32_t* ids;
  float* depth;
} Target;

/* Sutherland-Hodgman clip of a camera-frame polygon to x >= near. */
static int clip_near(const double (*in)[3], int n, double near, double (*out)[3]) {
  int m = 0;
  for (int i = 0; i < n; ++i) {
    const double* p = in[i];
    const double* q = in[(i + 1) % n];
    const int p_in = p[0] >= near, q_in = q[0] >= near;
    if (p_in) {
      out[m][0] = p[0], out[m][1] = p[1], out[m][2] = p[2];
      ++m;
    }
    if (p_in != q_in) {
      const double t = (near - p[0]) / (q[0] - p[0]);
      for (int c = 0; c < 3; ++c) out[m][c] = p[c] + t * (q[c] - p[c]);
      ++m;
    }
  }
  return m;
}

/* Fill one convex face: poly (n camera-frame points, x >= near), plane n . p = d in the camera frame. A face
   thinner than a pixel is drawn as a line (every row slab it crosses gets at least the pixel nearest its
   centre), so poles and edge-on faces do not break up into dots. Returns 1 if a pixel was written. */
static int fill_face(const Target* t, const double (*poly)[3], int n, const double plane[4], int32_t id) {
  const double f = t->focal, cx = t->width / 2.0 - 0.5, cy = t->height / 2.0 - 0.5;
  double u[MAX_POLY], v[MAX_POLY];
  double vmin = BIG, vmax = -BIG, umin = BIG, umax = -BIG;
  double xmin = BIG, xmax = -BIG, area2 = 0.0;
  for (int k = 0; k < n; ++k) {
    u[k] = cx + f * poly[k][1] / poly[k][0];
    v[k] = cy - f * poly[k][2] / poly[k][0];
    vmin = fmin(vmin, v[k]), vmax = fmax(vmax, v[k]), umin = fmin(umin, u[k]), umax = fmax(umax, u[k]);
    xmin = fmin(xmin, poly[k][0]), xmax = fmax(xmax, poly[k][0]);
  }
  if (umax < -0.5 || umin > t->width - 0.5 || vmax < -0.5 || vmin > t->height - 0.5) return 0;
  for (int k = 0; k < n; ++k) {
    const int l = (k + 1) % n;
    area2 += u[k] * v[l] - u[l] * v[k];
  }
  const double span = fmax(umax - umin, vmax - vmin);
  const int thin = span > 0.0 && fabs(area2) / 2.0 < span;  /* narrower than one pixel on average */
  /* Rows and columns are clamped in double before the casts: a vertex near the near plane projects far out. */
  const int j0 = (int)clamp(ceil(vmin - (thin ? 0.5 : 0.0)), 0.0, t->height);
  const int j1 = (int)clamp(floor(vmax + (thin ? 0.5 : 0.0)), -1.0, t->height - 1.0);
  int wrote = 0;
  for (int j = j0; j <= j1; ++j) {
    /* The polygon's extent in u over the row: at the line v = j (exact fill), or over the slab
       [j - 0.5, j + 0.5] (thin faces). */
    const double lo = thin ? j - 0.5 : j, hi = thin ? j + 0.5 : j;
    double left = BIG, right = -BIG;
    for (int k = 0; k < n; ++k) {
      const int l = (k + 1) % n;
      double va = v[k], vb = v[l], ua = u[k], ub = u[l];
      if (va > vb) {
        double s = va; va = vb; vb = s;
        s = ua; ua = ub; ub = s;
      }
      if (vb < lo || va > hi) continue;
      const double c0 = fmax(va, lo), c1 = fmin(vb, hi);
      const double dv = vb - va;
      const double x0 = dv > 1e-12 ? ua + (ub - ua) * (c0 - va) / dv : fmin(ua, ub);
      const double x1 = dv > 1e-12 ? ua + (ub - ua) * (c1 - va) / dv : fmax(ua, ub);
      left = fmin(left, fmin(x0, x1));
      right = fmax(right, fmax(x0, x1));
    }
    if (left > right) continue;
    const double first = thin ? floor(left + 0.5) : ceil(left), last = thin ? floor(right + 0.5) : floor(right);
    const int i0 = (int)clamp(first, 0.0, t->width), i1 = (int)clamp(last, -1.0, t->width - 1.0);
    if (i0 > i1) continue;
    const double b = -(j + 0.5 - t->height / 2.0) / f;
    const double row = plane[0] + plane[2] * b;
    float* zrow = t->depth + (int64_t)j * t->width;
    int32_t* idrow = t->ids + (int64_t)j * t->width;
    for (int i = i0; i <= i1; ++i) {
      const double a = (i + 0.5 - t->width / 2.0) / f;
      const double denom = row + plane[1] * a;
      /* Along the ray the face's plane is hit at x = d / (n . ray); near-parallel rays (edge-on faces, pixels
         just outside the exact outline of a thin face) take the nearest depth the face has. */
      double x = fabs(denom) > 1e-12 ? plane[3] / denom : xmin;
      if (x < xmin) x = xmin;
      if (x > xmax) x = xmax;
      if (x < zrow[i]) {
        zrow[i] = (float)x;
        idrow[i] = id;
        wrote = 1;
      }
    }
  }
  return wrote;
}

/* center (N, 3), rot (N, 3, 3) with local axes as columns, extent (N, 3), all float64, world frame;
   cam_pos (3,), cam_rot (3, 3) with columns forward, right, up. ground_depth (H, W) float32 seeds the
   z-buffer; ids (H, W) int32 and depth (H, W) float32 are written. Returns the number of faces drawn. */
int draw_boxes(int n_boxes, const double* center, const double* rot, const double* extent, const double* cam_pos,
               const double* cam_rot, int width, int height, double focal, double near, double draw_distance,
               double min_pixels, const float* ground_depth, int32_t* ids, float* depth) {
  const Target t = {width, height, focal, near, ground_depth, ids, depth};
  const int64_t pixels = (int64_t)width * height;
  for (int64_t p = 0; p < pixels; ++p) {
    depth[p] = ground_depth[p];
    ids[p] = 0;
  }
  /* Frustum side planes through the camera: a sphere is outside when its centre lies beyond one by > r. */
  const double half_w = atan(width / (2.0 * focal)), half_h = atan(height / (2.0 * focal));
  const double cw = cos(half_w), sw = sin(half_w), ch = cos(half_h), sh = sin(half_h);
  int drawn = 0;
  for (int n = 0; n < n_boxes; ++n) {
    const double* c = center + 3 * n;
    const double* r = rot + 9 * n;
    const double* e = extent + 3 * n;
    const double rel[3] = {c[0] - cam_pos[0], c[1] - cam_pos[1], c[2] - cam_pos[2]};
    const double radius = sqrt(e[0] * e[0] + e[1] * e[1] + e[2] * e[2]);
    const double dist = sqrt(rel[0] * rel[0] + rel[1] * rel[1] + rel[2] * rel[2]);
    if (dist - radius >= draw_distance) continue;
    if (focal * radius <= min_pixels * fmax(dist - radius, near)) continue;
    double local[3];  /* box centre in the camera frame */
    for (int a = 0; a < 3; ++a)
      local[a] = rel[0] * cam_rot[0 * 3 + a] + rel[1] * cam_rot[1 * 3 + a] + rel[2] * cam_rot[2 * 3 + a];
    if (local[0] <= -radius) continue;
    if (local[1] * cw - local[0] * sw >= radius || -local[1] * cw - local[0] * sw >= radius) continue;
    if (local[2] * ch - local[0] * sh >= radius || -local[2] * ch - local[0] * sh >= radius) continue;
    /* The camera in the box's frame decides which faces face it. */
    double eye[3];
    for (int a = 0; a < 3; ++a) eye[a] = -(rel[0] * r[0 * 3 + a] + rel[1] * r[1 * 3 + a] + rel[2] * r[2 * 3 + a]);
    const int front[6] = {eye[0] > e[0], eye[0] < -e[0], eye[1] > e[1], eye[1] < -e[1], eye[2] > e[2], eye[2] < -e[2]};
    /* Box axes in the camera frame (columns), and the 8 corners. */
    double axes[3][3];  /* axes[a][k]: camera component a of box axis k */
    for (int a = 0; a < 3; ++a)
      for (int k = 0; k < 3; ++k)
        axes[a][k] = cam_rot[0 * 3 + a] * r[0 * 3 + k] + cam_rot[1 * 3 + a] * r[1 * 3 + k] + cam_rot[2 * 3 + a] * r[2 * 3 + k];
    double corners[8][3];
    for (int k = 0; k < 8; ++k) {
      const double s[3] = {(k & 4) ? e[0] : -e[0], (k & 2) ? e[1] : -e[1], (k & 1) ? e[2] : -e[2]};
      for (int a = 0; a < 3; ++a) corners[k][a] = local[a] + axes[a][0] * s[0] + axes[a][1] * s[1] + axes[a][2] * s[2];
    }
    for (int face = 0; face < 6; ++face) {
      if (!front[face]) continue;
      double quad[4][3], poly[MAX_POLY][3];
      double xmin = BIG, xmax = -BIG;
      for (int k = 0; k < 4; ++k) {
        const double* p = corners[FACE_CORNERS[face][k]];
        quad[k][0] = p[0], quad[k][1] = p[1], quad[k][2] = p[2];
        xmin = fmin(xmin, p[0]), xmax = fmax(xmax, p[0]);
      }
      if (xmax <= near) continue;
      int m = 4;
      if (xmin < near) {
        m = clip_near((const double (*)[3])quad, 4, near, poly);
        if (m < 3) continue;
      } else {
        for (int k = 0; k < 4; ++k) poly[k][0] = quad[k][0], poly[k][1] = quad[k][1], poly[k][2] = quad[k][2];
      }
      double plane[4];
      const int axis = face / 2;
      const double sign = FACE_NORMALS[face][axis];
      for (int a = 0; a < 3; ++a) plane[a] = sign * axes[a][axis];
      plane[3] = plane[0] * quad[0][0] + plane[1] * quad[0][1] + plane[2] * quad[0][2];
      drawn += fill_face(&t, (const double (*)[3])poly, m, plane, 6 * n + face + 1);
    }
  }
  return drawn;
}

/* The colour pass: a lit BGRA image from the geometry pass. Flat shading (`face_light` per face id, row 0 the
   ground's), the parent's headlights as cones of light at night, wet roads darker and mirroring the horizon at
   grazing angles, emissive faces unlit, the sky a gradient from the horizon to the zenith with the sun's glow,
   then fog by depth. Colours are truncated to bytes at the end (as numpy's astype does).
   face_color (F + 1, 3) BGR; ground_tag (H, W) or NULL when the road is dry; up (H, W): world z of each
   pixel's ray (1, a, b); norm (H, W): its length; cam_rot (3, 3): columns forward, right, up; beams (n, 6):
   origin and unit forward of each headlight beam, whose light is scaled by `headlight` (0: none). */
void shade(int width, int height, double focal, const int32_t* ids, const float* face_light,
           const float* face_color, const uint8_t* emissive, const uint8_t* ground_bgra, const uint8_t* ground_tag,
           int road_tag, int road_line_tag, const float* up, const float* norm, const float* ground_depth,
           const float* depth, double far, const double* cam_pos, const double* cam_rot, int n_beams,
           const double* beams, float headlight, float headlight_range, const float* tint, float wet,
           const float* reflect, const double* sun, const float* horizon, const float* zenith,
           float glow_strength, float fog_per_metre, float fog_start, float sky_fog_distance,
           const float* fog_color, uint8_t* out) {
  for (int j = 0; j < height; ++j) {
    const double b = -(j + 0.5 - height / 2.0) / focal;
    for (int i = 0; i < width; ++i) {
      const int64_t p = (int64_t)j * width + i;
      const double a = (i + 0.5 - width / 2.0) / focal;
      const int32_t id = ids[p];
      const int sky = id == 0 && ground_depth[p] >= far;
      float color[3];
      if (sky) {
        const float elevation = up[p] / norm[p];
        const float toward_sun = (float)((sun[0] + sun[1] * a + sun[2] * b) / norm[p]);
        const float t = sqrtf(fminf(fmaxf(elevation, 0.0f), 1.0f));
        /* The glow (cos^300) is below 1e-6 more than 18 degrees from the sun. */
        const float glow = toward_sun > 0.95f ? powf(toward_sun, 300.0f) * glow_strength : 0.0f;
        for (int c = 0; c < 3; ++c) {
          const float v = horizon[c] + (zenith[c] - horizon[c]) * t;
          color[c] = v + glow * (255.0f - v);
        }
      } else if (id > 0 && emissive[id]) {
        for (int c = 0; c < 3; ++c) color[c] = face_color[3 * id + c];
      } else {
        float lum = face_light[id];
        if (headlight > 0.0f) {
          /* The lit point: the camera plus depth along the pixel's ray (forward + a right + b up). */
          double point[3];
          for (int k = 0; k < 3; ++k)
            point[k] = cam_pos[k] + depth[p] * (cam_rot[3 * k] + a * cam_rot[3 * k + 1] + b * cam_rot[3 * k + 2]);
          for (int n = 0; n < n_beams; ++n) {
            const double* beam = beams + 6 * n;
            const double rel[3] = {point[0] - beam[0], point[1] - beam[1], point[2] - beam[2]};
            const double along = rel[0] * beam[3] + rel[1] * beam[4] + rel[2] * beam[5];
            if (along <= 0.0) continue;
            double lateral2 = 0.0;
            for (int k = 0; k < 3; ++k) lateral2 += (rel[k] - along * beam[3 + k]) * (rel[k] - along * beam[3 + k]);
            const double spread = 0.25 + 0.28 * along, reach = along / headlight_range;
            lum += headlight * (float)(exp(-lateral2 / (spread * spread)) / (1.0 + reach * reach));
          }
        }
        for (int c = 0; c < 3; ++c)
          color[c] = (id > 0 ? face_color[3 * id + c] : (float)ground_bgra[4 * p + c]) * lum * tint[c];
        if (wet > 0.0f && id == 0 && ground_tag && (ground_tag[p] == road_tag || ground_tag[p] == road_line_tag)) {
          const float steep = fminf(fmaxf(-up[p] / norm[p] * 4.0f, 0.0f), 1.0f);
          const float grazing = (1.0f - steep) * (1.0f - steep);
          for (int c = 0; c < 3; ++c) color[c] = color[c] * (1.0f - 0.45f * wet) + reflect[c] * grazing;
        }
      }
      uint8_t* px = out + 4 * p;
      const float distance = sky ? sky_fog_distance : depth[p];
      const float fog = fog_per_metre > 0.0f ? 1.0f - expf(-fog_per_metre * fmaxf(distance - fog_start, 0.0f)) : 0.0f;
      for (int c = 0; c < 3; ++c)
        px[c] = (uint8_t)fminf(fmaxf(color[c] * (1.0f - fog) + fog_color[c] * fog, 0.0f), 255.0f);
      px[3] = 255;
    }
  }
}
