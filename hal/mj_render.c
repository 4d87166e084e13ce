/* mj_render.c - headless camera images for simulated robots.
 *
 * An OpenGL context is made on EGL's surfaceless platform (Mesa's software
 * renderer where there is no GPU), so no X server or window is needed. Quality
 * settings are cut to what a policy needs (no shadows, reflections, skybox or
 * multisampling) and the offscreen buffer is the size of the image: both matter
 * more for speed than the image size itself. Each robot has its own context and
 * makes it current before rendering, so several robots may share a thread. */
#include "hal/mj.h"

#include <EGL/egl.h>
#include <EGL/eglext.h>
#include <stdlib.h>
#include <string.h>

struct mj_render {
    EGLDisplay dpy;
    EGLContext ctx;
    mjvScene scn;
    mjrContext con;
    mjvOption opt;
    mjvCamera cam;
    int w, h;
    int have_scene, have_con;
    uint8_t *flip;   /* one bottom-up frame, flipped into the caller's buffer */
};

static EGLDisplay surfaceless_display(void)
{
    PFNEGLGETPLATFORMDISPLAYEXTPROC get =
        (PFNEGLGETPLATFORMDISPLAYEXTPROC)eglGetProcAddress("eglGetPlatformDisplayEXT");
    if (!get) return EGL_NO_DISPLAY;
    return get(EGL_PLATFORM_SURFACELESS_MESA, EGL_DEFAULT_DISPLAY, NULL);
}

static int make_context(mj_render_t *rd, cr_err_t *err)
{
    /* One llvmpipe thread per core fights the simulation on small machines. */
    setenv("LP_NUM_THREADS", "0", 0);
    rd->dpy = surfaceless_display();
    if (rd->dpy == EGL_NO_DISPLAY)
        return cr_err_set(err, CR_EUNAVAIL, "camera: no EGL surfaceless display (Mesa EGL missing?)");
    EGLint major, minor;
    if (!eglInitialize(rd->dpy, &major, &minor)) {
        rd->dpy = EGL_NO_DISPLAY;
        return cr_err_set(err, CR_EUNAVAIL, "camera: eglInitialize failed (0x%x)", eglGetError());
    }
    const EGLint attrs[] = {EGL_RED_SIZE, 8, EGL_GREEN_SIZE, 8, EGL_BLUE_SIZE, 8,
                            EGL_DEPTH_SIZE, 24, EGL_RENDERABLE_TYPE, EGL_OPENGL_BIT,
                            EGL_SURFACE_TYPE, EGL_PBUFFER_BIT, EGL_NONE};
    EGLConfig cfg;
    EGLint n = 0;
    if (!eglChooseConfig(rd->dpy, attrs, &cfg, 1, &n) || n < 1)
        return cr_err_set(err, CR_EUNAVAIL, "camera: no EGL config with OpenGL and depth");
    if (!eglBindAPI(EGL_OPENGL_API))
        return cr_err_set(err, CR_EUNAVAIL, "camera: EGL cannot bind OpenGL");
    rd->ctx = eglCreateContext(rd->dpy, cfg, EGL_NO_CONTEXT, NULL);
    if (rd->ctx == EGL_NO_CONTEXT)
        return cr_err_set(err, CR_EUNAVAIL, "camera: eglCreateContext failed (0x%x)", eglGetError());
    if (!eglMakeCurrent(rd->dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, rd->ctx))
        return cr_err_set(err, CR_EUNAVAIL, "camera: eglMakeCurrent failed (0x%x)", eglGetError());
    return 0;
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
    rd->w = r->cfg.image_width;
    rd->h = r->cfg.image_height;
    rd->flip = malloc((size_t)rd->w * (size_t)rd->h * 3);
    int rc = rd->flip ? make_context(rd, err) : cr_err_set(err, CR_ENOMEM, "out of memory");
    if (rc) {
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
    if (!eglMakeCurrent(rd->dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, rd->ctx))
        return cr_err_set(err, CR_EIO, "camera: eglMakeCurrent failed (0x%x)", eglGetError());
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
    if (rd->ctx != EGL_NO_CONTEXT && rd->dpy != EGL_NO_DISPLAY)
        eglMakeCurrent(rd->dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, rd->ctx);
    if (rd->have_con) mjr_freeContext(&rd->con);
    if (rd->have_scene) mjv_freeScene(&rd->scn);
    if (rd->dpy != EGL_NO_DISPLAY) {
        eglMakeCurrent(rd->dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT);
        if (rd->ctx != EGL_NO_CONTEXT) eglDestroyContext(rd->dpy, rd->ctx);
    }
    free(rd->flip);
    free(rd);
}
