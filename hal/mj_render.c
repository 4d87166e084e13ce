/* mj_render.c - headless camera images for simulated robots.
 *
 * MuJoCo draws into whatever OpenGL context is current; this file makes one
 * without an X server or window, in one of two ways:
 *   - EGL on Mesa's surfaceless platform (the GPU's driver where there is one,
 *     else Mesa's llvmpipe software renderer);
 *   - OSMesa, Mesa's off-screen CPU renderer, where EGL cannot give a context
 *     (no libEGL, no surfaceless platform).
 * The robot option `gl` picks one (auto tries EGL first, then OSMesa).
 *
 * Both libraries are loaded with dlopen, only when a camera is opened, for a
 * reason that is MuJoCo's: its GL loader takes its functions from libEGL
 * whenever libEGL is in the process, whatever context is current. Linking
 * libEGL would therefore make OSMesa unusable, and a binary without cameras
 * would need libEGL to start. For the same reason a process renders with one
 * GL only: the first camera decides, and a robot that asks for the other one
 * afterwards gets an error that says so.
 *
 * Quality settings are cut to what a policy needs (no shadows, reflections,
 * skybox or multisampling) and the offscreen buffer is the size of the image:
 * both matter more for speed than the image size itself. Each robot has its
 * own context and makes it current before rendering, so several robots may
 * share a thread. */
#include "hal/mj.h"

#include <EGL/egl.h>
#include <EGL/eglext.h>
#include <GL/osmesa.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum gl_kind { BACKEND_NONE = 0, BACKEND_EGL, BACKEND_OSMESA } gl_kind_t;

static const char *gl_name(gl_kind_t k) { return k == BACKEND_EGL ? "egl" : "osmesa"; }

/* ---- the two libraries, resolved once ------------------------------------------ */

static struct {
    void *lib;
    PFNEGLGETPROCADDRESSPROC get_proc;
    PFNEGLINITIALIZEPROC initialize;
    PFNEGLCHOOSECONFIGPROC choose_config;
    PFNEGLBINDAPIPROC bind_api;
    PFNEGLCREATECONTEXTPROC create_context;
    PFNEGLMAKECURRENTPROC make_current;
    PFNEGLDESTROYCONTEXTPROC destroy_context;
    PFNEGLGETERRORPROC get_error;
} egl;

static struct {
    void *lib;
    OSMesaContext (*create)(GLenum, GLint, GLint, GLint, OSMesaContext);
    GLboolean (*make_current)(OSMesaContext, void *, GLenum, GLsizei, GLsizei);
    void (*destroy)(OSMesaContext);
} osm;

/* Guards the libraries and the process's choice of GL. */
static pthread_mutex_t gl_mu = PTHREAD_MUTEX_INITIALIZER;
static gl_kind_t process_gl;

#define SYM(api, field, name) (*(void **)&api.field = dlsym(api.lib, name))

static int open_lib(void **lib, const char *const *names, size_t n, char *why, size_t why_len)
{
    if (*lib) return 0;
    /* RTLD_GLOBAL: MuJoCo's GL loader looks the library's symbols up itself. */
    for (size_t i = 0; i < n && !*lib; i++) *lib = dlopen(names[i], RTLD_NOW | RTLD_GLOBAL);
    if (*lib) return 0;
    const char *e = dlerror();
    snprintf(why, why_len, "cannot load %s (%s)", names[0], e ? e : "not found");
    return -1;
}

static int load_egl(char *why, size_t why_len)
{
    static const char *const names[] = {"libEGL.so.1", "libEGL.so"};
    if (egl.make_current) return 0;
    if (open_lib(&egl.lib, names, 2, why, why_len)) return -1;
    if (!SYM(egl, get_proc, "eglGetProcAddress") || !SYM(egl, initialize, "eglInitialize") ||
        !SYM(egl, choose_config, "eglChooseConfig") || !SYM(egl, bind_api, "eglBindAPI") ||
        !SYM(egl, create_context, "eglCreateContext") ||
        !SYM(egl, destroy_context, "eglDestroyContext") || !SYM(egl, get_error, "eglGetError") ||
        !SYM(egl, make_current, "eglMakeCurrent")) {
        egl.make_current = NULL;
        snprintf(why, why_len, "libEGL lacks the EGL 1.4 entry points");
        return -1;
    }
    return 0;
}

static int load_osmesa(char *why, size_t why_len)
{
    static const char *const names[] = {"libOSMesa.so.8", "libOSMesa.so.6", "libOSMesa.so"};
    if (osm.make_current) return 0;
    if (open_lib(&osm.lib, names, 3, why, why_len)) return -1;
    if (!SYM(osm, create, "OSMesaCreateContextExt") || !SYM(osm, destroy, "OSMesaDestroyContext") ||
        !SYM(osm, make_current, "OSMesaMakeCurrent")) {
        osm.make_current = NULL;
        snprintf(why, why_len, "libOSMesa lacks OSMesaCreateContextExt/MakeCurrent");
        return -1;
    }
    return 0;
}

/* ---- one robot's renderer --------------------------------------------------------- */

struct mj_render {
    gl_kind_t kind;
    EGLDisplay dpy;
    EGLContext ctx;
    OSMesaContext osctx;
    uint8_t *osbuf;  /* OSMesa's default framebuffer; MuJoCo draws into its own */
    mjvScene scn;
    mjrContext con;
    mjvOption opt;
    mjvCamera cam;
    int w, h;
    int have_scene, have_con;
    uint8_t *flip;   /* one bottom-up frame, flipped into the caller's buffer */
};

static int make_egl(mj_render_t *rd, cr_err_t *err)
{
    char why[256];
    if (load_egl(why, sizeof why)) return cr_err_set(err, CR_EUNAVAIL, "camera: EGL: %s", why);
    PFNEGLGETPLATFORMDISPLAYEXTPROC get_display =
        (PFNEGLGETPLATFORMDISPLAYEXTPROC)egl.get_proc("eglGetPlatformDisplayEXT");
    if (get_display) rd->dpy = get_display(EGL_PLATFORM_SURFACELESS_MESA, EGL_DEFAULT_DISPLAY, NULL);
    if (rd->dpy == EGL_NO_DISPLAY)
        return cr_err_set(err, CR_EUNAVAIL, "camera: no EGL surfaceless display (Mesa EGL missing?)");
    EGLint major, minor;
    if (!egl.initialize(rd->dpy, &major, &minor)) {
        rd->dpy = EGL_NO_DISPLAY;
        return cr_err_set(err, CR_EUNAVAIL, "camera: eglInitialize failed (0x%x)", egl.get_error());
    }
    const EGLint attrs[] = {EGL_RED_SIZE, 8, EGL_GREEN_SIZE, 8, EGL_BLUE_SIZE, 8,
                            EGL_DEPTH_SIZE, 24, EGL_RENDERABLE_TYPE, EGL_OPENGL_BIT,
                            EGL_SURFACE_TYPE, EGL_PBUFFER_BIT, EGL_NONE};
    EGLConfig cfg;
    EGLint n = 0;
    if (!egl.choose_config(rd->dpy, attrs, &cfg, 1, &n) || n < 1)
        return cr_err_set(err, CR_EUNAVAIL, "camera: no EGL config with OpenGL and depth");
    if (!egl.bind_api(EGL_OPENGL_API))
        return cr_err_set(err, CR_EUNAVAIL, "camera: EGL cannot bind OpenGL");
    rd->ctx = egl.create_context(rd->dpy, cfg, EGL_NO_CONTEXT, NULL);
    if (rd->ctx == EGL_NO_CONTEXT)
        return cr_err_set(err, CR_EUNAVAIL, "camera: eglCreateContext failed (0x%x)", egl.get_error());
    rd->kind = BACKEND_EGL;
    return 0;
}

static int make_osmesa(mj_render_t *rd, cr_err_t *err)
{
    char why[256];
    if (load_osmesa(why, sizeof why)) return cr_err_set(err, CR_EUNAVAIL, "camera: OSMesa: %s", why);
    rd->osctx = osm.create(OSMESA_RGBA, 24, 8, 0, NULL);
    if (!rd->osctx) return cr_err_set(err, CR_EUNAVAIL, "camera: OSMesaCreateContextExt failed");
    rd->osbuf = malloc((size_t)rd->w * (size_t)rd->h * 4);
    if (!rd->osbuf) return cr_err_set(err, CR_ENOMEM, "out of memory");
    rd->kind = BACKEND_OSMESA;
    return 0;
}

static int make_current(mj_render_t *rd, cr_err_t *err)
{
    if (rd->kind == BACKEND_OSMESA) {
        if (!osm.make_current(rd->osctx, rd->osbuf, GL_UNSIGNED_BYTE, rd->w, rd->h))
            return cr_err_set(err, CR_EIO, "camera: OSMesaMakeCurrent failed");
        return 0;
    }
    if (!egl.make_current(rd->dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, rd->ctx))
        return cr_err_set(err, CR_EIO, "camera: eglMakeCurrent failed (0x%x)", egl.get_error());
    return 0;
}

static void release_gl(mj_render_t *rd)
{
    if (rd->dpy != EGL_NO_DISPLAY) {
        egl.make_current(rd->dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT);
        if (rd->ctx != EGL_NO_CONTEXT) egl.destroy_context(rd->dpy, rd->ctx);
    }
    if (rd->osctx) osm.destroy(rd->osctx);
    free(rd->osbuf);
    rd->dpy = EGL_NO_DISPLAY;
    rd->ctx = EGL_NO_CONTEXT;
    rd->osctx = NULL;
    rd->osbuf = NULL;
    rd->kind = BACKEND_NONE;
}

/* gl: "", "auto", "egl" or "osmesa". The caller holds gl_mu. */
static int make_context(mj_render_t *rd, const char *gl, cr_err_t *err)
{
    gl_kind_t want;
    if (!gl[0] || !strcmp(gl, "auto")) want = BACKEND_NONE;
    else if (!strcmp(gl, "egl")) want = BACKEND_EGL;
    else if (!strcmp(gl, "osmesa")) want = BACKEND_OSMESA;
    else return cr_err_set(err, CR_EINVAL, "option gl='%s': expected auto, egl or osmesa", gl);
    if (process_gl && want && want != process_gl)
        return cr_err_set(err, CR_EINVAL,
                          "option gl='%s': this process already renders with %s, and MuJoCo "
                          "uses one GL per process; run this robot in another process",
                          gl, gl_name(process_gl));
    if (process_gl) want = process_gl;
    /* One llvmpipe thread per core fights the simulation on small machines. */
    setenv("LP_NUM_THREADS", "0", 0);
    int rc;
    if (want) {
        rc = want == BACKEND_EGL ? make_egl(rd, err) : make_osmesa(rd, err);
    } else {
        rc = make_egl(rd, err);
        if (rc) {
            cr_err_t egl_err = *err;
            release_gl(rd);
            /* libEGL in the process takes MuJoCo's loader with it (see the top). */
            if (egl.lib)
                return cr_err_set(err, CR_EUNAVAIL, "%s; OSMesa cannot render in a process that "
                                  "has loaded libEGL: set the robot option gl=osmesa",
                                  egl_err.msg);
            rc = make_osmesa(rd, err);
            if (rc)
                return cr_err_set(err, CR_EUNAVAIL, "no headless GL: %s; %s", egl_err.msg,
                                  err->msg);
        }
    }
    if (rc == 0) rc = make_current(rd, err);
    if (rc == 0) process_gl = rd->kind;
    return rc;
}

int mj_render_create(mj_robot_t *r, mj_render_t **out, cr_err_t *err)
{
    mjModel *m = r->m;
    int camid = mj_name2id(m, mjOBJ_CAMERA, r->cfg.camera);
    if (camid < 0)
        return cr_err_set(err, CR_EINVAL, "option camera='%s': the MJCF has no such camera",
                          r->cfg.camera);
    mj_render_t *rd = calloc(1, sizeof *rd);
    if (!rd) return cr_err_set(err, CR_ENOMEM, "out of memory");
    rd->dpy = EGL_NO_DISPLAY;
    rd->ctx = EGL_NO_CONTEXT;
    rd->w = r->cfg.image_width;
    rd->h = r->cfg.image_height;
    rd->flip = malloc((size_t)rd->w * (size_t)rd->h * 3);
    if (!rd->flip) {
        mj_render_destroy(rd);
        return cr_err_set(err, CR_ENOMEM, "out of memory");
    }
    /* Held through mjr_makeContext: MuJoCo loads its GL functions there. */
    pthread_mutex_lock(&gl_mu);
    int rc = make_context(rd, r->cfg.gl, err);
    if (rc) {
        pthread_mutex_unlock(&gl_mu);
        mj_render_destroy(rd);
        return rc;
    }
    m->vis.global.offwidth = rd->w;
    m->vis.global.offheight = rd->h;
    m->vis.quality.offsamples = 0;
    m->vis.quality.shadowsize = 0;
    mjv_defaultScene(&rd->scn);
    mjv_makeScene(m, &rd->scn, 2000);
    rd->have_scene = 1;
    rd->scn.flags[mjRND_SHADOW] = 0;
    rd->scn.flags[mjRND_REFLECTION] = 0;
    rd->scn.flags[mjRND_SKYBOX] = 0;
    mjv_defaultOption(&rd->opt);
    mjv_defaultCamera(&rd->cam);
    rd->cam.type = mjCAMERA_FIXED;
    rd->cam.fixedcamid = camid;
    mjr_defaultContext(&rd->con);
    mjr_makeContext(m, &rd->con, mjFONTSCALE_100);
    pthread_mutex_unlock(&gl_mu);
    rd->have_con = 1;
    mjr_setBuffer(mjFB_OFFSCREEN, &rd->con);
    if (rd->con.currentBuffer != mjFB_OFFSCREEN || rd->con.offWidth < rd->w ||
        rd->con.offHeight < rd->h) {
        mj_render_destroy(rd);
        return cr_err_set(err, CR_EUNAVAIL, "camera: no offscreen framebuffer of %dx%d", r->cfg.image_width,
                          r->cfg.image_height);
    }
    *out = rd;
    return 0;
}

int mj_render_image(mj_render_t *rd, mj_robot_t *r, uint8_t *rgb, cr_err_t *err)
{
    int rc = make_current(rd, err);
    if (rc) return rc;
    mjrRect vp = {0, 0, rd->w, rd->h};
    mjv_updateScene(r->m, r->d, &rd->opt, NULL, &rd->cam, mjCAT_ALL, &rd->scn);
    mjr_setBuffer(mjFB_OFFSCREEN, &rd->con);
    mjr_render(vp, &rd->scn, &rd->con);
    mjr_readPixels(rd->flip, NULL, vp, &rd->con);
    size_t row = (size_t)rd->w * 3;
    for (int y = 0; y < rd->h; y++)   /* OpenGL rows run bottom-up */
        memcpy(rgb + (size_t)y * row, rd->flip + (size_t)(rd->h - 1 - y) * row, row);
    return 0;
}

void mj_render_destroy(mj_render_t *rd)
{
    if (!rd) return;
    cr_err_t ignored = {0};
    if (rd->kind) make_current(rd, &ignored);   /* MuJoCo frees its GL objects */
    if (rd->have_con) mjr_freeContext(&rd->con);
    if (rd->have_scene) mjv_freeScene(&rd->scn);
    release_gl(rd);
    free(rd->flip);
    free(rd);
}
