// replay: feeds every file of the given folders (or the given files) to a libFuzzer harness's
// LLVMFuzzerTestOneInput without libFuzzer, so the normal build keeps the corpus, and every
// crash once found and added to it, passing. Fails when it finds no input at all.
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// Reads a whole file and runs the harness on it; returns 0 when the file could not be read.
static int replay_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return 0;
    }
    size_t capacity = 4096, length = 0;
    uint8_t *data = malloc(capacity);
    while (data) {
        length += fread(data + length, 1, capacity - length, f);
        if (length < capacity) break;
        capacity *= 2;
        uint8_t *grown = realloc(data, capacity);
        if (!grown) free(data);
        data = grown;
    }
    int failed = ferror(f) || !data;
    fclose(f);
    if (failed) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        free(data);
        return 0;
    }
    LLVMFuzzerTestOneInput(data, length);
    free(data);
    return 1;
}

int main(int argc, char **argv) {
    size_t replayed = 0;
    int unreadable = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s does not exist\n", argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (replay_file(argv[i]))
                replayed++;
            else
                unreadable = 1;
            continue;
        }
        DIR *dir = opendir(argv[i]);
        if (!dir) {
            fprintf(stderr, "replay: cannot open folder %s\n", argv[i]);
            return 1;
        }
        struct dirent *entry;
        while ((entry = readdir(dir)) != NULL) {
            if (entry->d_name[0] == '.') continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], entry->d_name);
            if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
            if (replay_file(path))
                replayed++;
            else
                unreadable = 1;
        }
        closedir(dir);
    }
    printf("replayed %zu inputs\n", replayed);
    if (replayed == 0) fprintf(stderr, "replay: no inputs found\n");
    return replayed == 0 || unreadable;
}
