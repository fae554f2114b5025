/* test_structure.c - our graphs against the tables generated from the authors' model
 * (testdata/reference, copied from the project spec): every state-dict key and shape, and every
 * convolution's kernel, stride, dilation, groups, padding, bias and in/out shape at 512x512. */
#include "test_util.h"
#include "internal.h"

static char *read_file(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) fail_msg("cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    buf[n] = 0;
    fclose(fp);
    return buf;
}

/* splits a TSV line in place into at most max fields */
static int fields(char *line, char **f, int max) {
    int n = 0;
    f[n++] = line;
    for (char *p = line; *p && n < max; p++)
        if (*p == '\t') {
            *p = 0;
            f[n++] = p + 1;
        }
    return n;
}

static void check_keys(const char *cfgname, const char *tsv) {
    char path[512];
    disopt_model_config cfg;
    disopt_keylist *kl;
    snprintf(path, sizeof path, "%s/reference/%s", DISOPT_TESTDATA, tsv);
    char *text = read_file(path);
    assert_int_equal(disopt_model_config_parse(cfgname, &cfg), DISOPT_OK);
    assert_int_equal(disopt_keylist_create(&cfg, &kl), DISOPT_OK);
    int rows = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[4];
        if (strncmp(line, "key\t", 4) == 0) continue;
        assert_int_equal(fields(line, f, 4), 4);
        rows++;
        int found = -1;
        for (int i = 0; i < disopt_keylist_count(kl); i++) {
            const char *name;
            disopt_keylist_at(kl, i, &name, NULL, NULL, NULL);
            if (strcmp(name, f[0]) == 0) found = i;
        }
        if (found < 0) fail_msg("%s: key %s of the authors' model is not declared", cfgname, f[0]);
        const char *name;
        disopt_key_kind kind;
        int nd;
        int64_t sh[4];
        disopt_keylist_at(kl, found, &name, &kind, &nd, sh);
        char ours[64] = "scalar";
        if (nd > 0) {
            size_t o = 0;
            for (int d = 0; d < nd; d++) o += (size_t)snprintf(ours + o, sizeof ours - o, "%s%lld", d ? "x" : "", (long long)sh[d]);
        }
        if (strcmp(ours, f[1]) != 0) fail_msg("%s: key %s: shape %s, authors' %s", cfgname, f[0], ours, f[1]);
        if (strcmp(f[2], "int64") == 0) assert_int_equal(kind, DISOPT_KEY_BN_COUNT);
    }
    assert_int_equal(rows, disopt_keylist_count(kl));
    disopt_keylist_destroy(kl);
    free(text);
}

static void parse2(const char *s, int *a, int *b) {
    assert_int_equal(sscanf(s, "%d,%d", a, b), 2);
}

static void check_convs(const char *cfgname, const char *tsv) {
    char path[512];
    disopt_model_config cfg;
    dp_graph g;
    snprintf(path, sizeof path, "%s/reference/%s", DISOPT_TESTDATA, tsv);
    char *text = read_file(path);
    assert_int_equal(disopt_model_config_parse(cfgname, &cfg), DISOPT_OK);
    assert_int_equal(dp_graph_build(&cfg, &g), DISOPT_OK);
    assert_int_equal(dp_graph_shapes(&g, 512, 512), DISOPT_OK);
    int rows = 0, nconv = 0;
    for (int i = 0; i < g.n_nodes; i++) nconv += g.nodes[i].op == DP_OP_CONV;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[12];
        char key[300];
        if (strncmp(line, "module\t", 7) == 0) continue;
        assert_int_equal(fields(line, f, 12), 12);
        rows++;
        snprintf(key, sizeof key, "%s.weight", f[0]);
        const dp_node *n = NULL;
        for (int i = 0; i < g.n_nodes && !n; i++)
            if (g.nodes[i].op == DP_OP_CONV && strcmp(g.params[g.nodes[i].w_key].key, key) == 0) n = &g.nodes[i];
        if (!n) fail_msg("%s: conv %s not in our graph", cfgname, f[0]);
        const dp_conv_params *c = &n->conv;
        int kh, kw, sh, sw, dh, dw, ph, pw, l = 0, r = 0, t = 0, b = 0;
        assert_int_equal(sscanf(f[4], "%dx%d", &kh, &kw), 2);
        parse2(f[5], &sh, &sw);
        parse2(f[6], &dh, &dw);
        parse2(f[8], &ph, &pw);
        if (strchr(f[9], ',')) assert_int_equal(sscanf(f[9], "%d,%d,%d,%d", &l, &r, &t, &b), 4);
        int ok = c->kh == kh && c->kw == kw && c->sh == sh && c->sw == sw && c->dh == dh && c->dw == dw &&
                 c->groups == atoi(f[7]) && c->pl == l + pw && c->pr == r + pw && c->pt == t + ph &&
                 c->pb == b + ph && (n->b_key >= 0) == (strcmp(f[10], "True") == 0);
        if (!ok)
            fail_msg("%s: conv %s: ours k%dx%d s%d,%d d%d,%d g%d pad l%d r%d t%d b%d bias %d; authors' %s %s %s g%s "
                     "pad %s static %s bias %s",
                     cfgname, f[0], c->kh, c->kw, c->sh, c->sw, c->dh, c->dw, c->groups, c->pl, c->pr, c->pt, c->pb,
                     n->b_key >= 0, f[4], f[5], f[6], f[7], f[8], f[9], f[10]);
        const dp_tensor *ti = &g.tensors[n->in[0]], *to = &g.tensors[n->out];
        char in_s[64], out_s[64];
        snprintf(in_s, sizeof in_s, "1x%dx%dx%d", ti->c, ti->h, ti->w);
        snprintf(out_s, sizeof out_s, "1x%dx%dx%d", to->c, to->h, to->w);
        if (strcmp(in_s, f[2]) || strcmp(out_s, f[3]))
            fail_msg("%s: conv %s: ours %s -> %s, authors' %s -> %s", cfgname, f[0], in_s, out_s, f[2], f[3]);
    }
    /* every conv we run is one the authors run (theirs lists exactly the forward pass's convs) */
    assert_int_equal(rows, nconv);
    dp_graph_free(&g);
    free(text);
}

static void test_teacher_b3(void **s) { (void)s; check_keys("teacher-b3", "keys_teacher_b3.tsv"); check_convs("teacher-b3", "convs_teacher_b3.tsv"); }
static void test_teacher_b4(void **s) { (void)s; check_keys("teacher-b4", "keys_teacher_b4.tsv"); check_convs("teacher-b4", "convs_teacher_b4.tsv"); }
static void test_student_b3(void **s) { (void)s; check_keys("student-b3", "keys_student_b3.tsv"); check_convs("student-b3", "convs_student_b3.tsv"); }
static void test_student_b4(void **s) { (void)s; check_keys("student-b4", "keys_student_b4.tsv"); check_convs("student-b4", "convs_student_b4.tsv"); }

static void test_all_variants_build(void **s) {
    (void)s;
    for (int v = 0; v <= 7; v++)
        for (int a = 0; a < 2; a++) {
            disopt_model_config cfg = {a ? DISOPT_ARCH_STUDENT : DISOPT_ARCH_TEACHER, v, 4, 2};
            dp_graph g;
            assert_int_equal(dp_graph_build(&cfg, &g), DISOPT_OK);
            assert_int_equal(dp_graph_shapes(&g, 64, 96), DISOPT_OK);
            assert_int_equal(g.tensors[g.out_fused].h, 64);
            assert_int_equal(g.tensors[g.out_fused].w, 96);
            dp_graph_free(&g);
        }
    disopt_model_config bad = {DISOPT_ARCH_TEACHER, 8, 4, 2};
    dp_graph g;
    assert_int_equal(dp_graph_build(&bad, &g), DISOPT_ERR_UNSUPPORTED);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_teacher_b3), cmocka_unit_test(test_teacher_b4), cmocka_unit_test(test_student_b3),
        cmocka_unit_test(test_student_b4), cmocka_unit_test(test_all_variants_build),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
