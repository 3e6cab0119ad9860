// launch: start-up sequence shared by the three roles.
#include "launch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/core/alloc.h"
#include "common/core/format.h"
#include "common/core/log.h"
#include "common/comm/job_comm.h"
#include "common/comm/mpi_check.h"
#include "common/comm/plan.h"
#include "common/comm/roles.h"
#include "common/model/model_config.h"

// Command-line state that is not part of the job config.
typedef struct {
    int help;            // --help: print the keys and exit
    int print_launch;    // --print-launch: print the process counts for run/train.sh and exit
    int64_t nproc;       // --nproc N: stage processes of the planned job (0: those launched)
    const char *join;    // --join SERVICE: expert servers joining a training job
    double join_timeout; // --join-timeout SECONDS
    char **config_argv;  // argv without the flags above: config options for the coordinator
    int config_argc;
} LaunchFlags;

static Dsv3Err parse_int_flag(const char *flag, const char *value, int64_t *out) {
    char *end = NULL;
    long long n = value ? strtoll(value, &end, 10) : 0;
    DSV3_CHECK(value && *value && !*end && n > 0, DSV3_ERR_USAGE,
               "%s needs a positive integer, not '%s'", flag, value ? value : "");
    *out = n;
    return DSV3_OK;
}

// Reads the role's own flags and keeps the rest, the config options, in f->config_argv (a
// counted array the caller frees).
static Dsv3Err parse_flags(Dsv3Role role, int argc, char **argv, LaunchFlags *f) {
    *f = (LaunchFlags){.join_timeout = 300};
    DSV3_CALL(dsv3_calloc((void **)&f->config_argv, (size_t)argc + 1, sizeof *f->config_argv,
                          "config arguments"));
    f->config_argv[f->config_argc++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            f->help = 1;
        } else if (role == DSV3_ROLE_COORDINATOR && strcmp(arg, "--print-launch") == 0) {
            f->print_launch = 1;
        } else if (role == DSV3_ROLE_COORDINATOR && strcmp(arg, "--nproc") == 0) {
            DSV3_CALL(parse_int_flag(arg, value, &f->nproc));
            i++;
        } else if (role == DSV3_ROLE_EXPERT && strcmp(arg, "--join") == 0) {
            DSV3_CHECK(value, DSV3_ERR_USAGE,
                       "--join needs the service name the training job publishes");
            f->join = value;
            i++;
        } else if (role == DSV3_ROLE_EXPERT && strcmp(arg, "--join-timeout") == 0) {
            int64_t seconds = 0;
            DSV3_CALL(parse_int_flag(arg, value, &seconds));
            f->join_timeout = (double)seconds;
            i++;
        } else if (role == DSV3_ROLE_COORDINATOR) {
            f->config_argv[f->config_argc++] = argv[i];
        } else {
            DSV3_RAISE(DSV3_ERR_USAGE,
                       "%s takes no option '%s': the coordinator reads the config and sends it to "
                       "every rank%s",
                       dsv3_role_program(role), arg,
                       role == DSV3_ROLE_EXPERT
                           ? " (expert servers take --join SERVICE and --join-timeout SECONDS)"
                           : "");
        }
    }
    return DSV3_OK;
}

// The coordinator's config: file, overrides, flavor, validation.
static Dsv3Err coordinator_load_config(int argc, char **argv, Dsv3Config *cfg) {
    dsv3_config_init(cfg);
    DSV3_CALL(dsv3_config_parse_args(cfg, argc, argv));
    DSV3_CALL(dsv3_model_config_resolve(cfg));
    return DSV3_OK;
}

// Collective over `comm`: root 0 sends `*text` (or, when `ok` is 0 on the root, a failure
// mark); the others receive a counted copy in *text. Returns through *ok whether it was sent.
static Dsv3Err broadcast_text(MPI_Comm comm, int *ok, char **text) {
    int rank = 0;
    DSV3_MPI_CALL(MPI_Comm_rank(comm, &rank));
    int64_t length = rank == 0 ? (*ok ? (int64_t)strlen(*text) : -1) : 0;
    DSV3_MPI_CALL(MPI_Bcast(&length, 1, MPI_INT64_T, 0, comm));
    *ok = length >= 0;
    if (!*ok) return DSV3_OK;
    if (rank != 0)
        DSV3_CALL(dsv3_alloc((void **)text, (size_t)length + 1, "broadcast config text"));
    DSV3_MPI_CALL(MPI_Bcast(*text, (int)length + 1, MPI_CHAR, 0, comm));
    return DSV3_OK;
}

// Every non-root rank: the config from the root's TOML text.
static Dsv3Err config_from_text(Dsv3Config *cfg, const char *text) {
    dsv3_config_init(cfg);
    DSV3_CALL(dsv3_config_load_text(cfg, text, strlen(text), "config from the coordinator"));
    DSV3_CALL(dsv3_model_config_resolve(cfg));
    return DSV3_OK;
}

static Dsv3ParallelDims config_dims(const Dsv3Config *cfg) {
    return (Dsv3ParallelDims){
        .pp = cfg->parallelism.pipeline_parallel_degree,
        .dp_replicate = cfg->parallelism.data_parallel_replicate_degree,
        .dp_shard = cfg->parallelism.data_parallel_shard_degree,
        .cp = cfg->parallelism.context_parallel_degree,
        .tp = cfg->parallelism.tensor_parallel_degree,
        .ep = cfg->parallelism.expert_parallel_degree,
        .pp_v_shaped = dsv3_pipe_name_is_v_shaped(cfg->parallelism.pipeline_parallel_schedule),
    };
}

// Prints the error; a user's mistake without the traceback unless the log level is debug.
static void report(Dsv3Err err, int user_error) {
    if (user_error && dsv3_log_level() > DSV3_LOG_DEBUG)
        DSV3_LOG_ERROR("%s: %s", dsv3_error_name(err), dsv3_error_message());
    else
        DSV3_LOG_ERROR("%s", dsv3_error_text());
}

void dsv3_launch_report(Dsv3Err err) {
    report(err, err == DSV3_ERR_CONFIG || err == DSV3_ERR_USAGE || err == DSV3_ERR_TIMEOUT ||
                    err == DSV3_ERR_LAUNCH || err == DSV3_ERR_NUMERIC);
}

// The global batch must split evenly over data-parallel ranks and micro-batches, and the
// routed experts evenly over the expert servers of a stage.
static Dsv3Err check_batch(const Dsv3Config *cfg, const Dsv3ParallelDims *dims) {
    DSV3_CHECK(cfg->model.num_experts % dims->ep == 0, DSV3_ERR_CONFIG,
               "parallelism.expert_parallel_degree %" PRId64
               " does not divide model.num_experts %" PRId64
               ": every expert server owns the same number of experts",
               dims->ep, cfg->model.num_experts);
    int64_t dp = dims->dp_replicate * dims->dp_shard;
    int64_t per_step = cfg->training.local_batch_size * dp;
    int64_t global = cfg->training.global_batch_size;
    DSV3_CHECK(global == -1 || global % per_step == 0, DSV3_ERR_CONFIG,
               "training.global_batch_size %" PRId64
               " is not a multiple of training.local_batch_size %" PRId64
               " × data-parallel degree %" PRId64 " (dp_replicate %" PRId64 " × dp_shard %" PRId64
               ") = %" PRId64,
               global, cfg->training.local_batch_size, dp, dims->dp_replicate, dims->dp_shard,
               per_step);
    return DSV3_OK;
}

// Start-up summary, printed by the coordinator.
static void log_summary(const Dsv3Launch *launch, const Dsv3ParallelDims *dims, int64_t n_stage,
                        int64_t n_expert) {
    const Dsv3Config *cfg = &launch->config;
    Dsv3ParamCounts counts;
    dsv3_model_param_counts(&launch->model, &counts);
    char total[DSV3_FORMAT_CAPACITY], active[DSV3_FORMAT_CAPACITY], routed[DSV3_FORMAT_CAPACITY],
        shared[DSV3_FORMAT_CAPACITY], router[DSV3_FORMAT_CAPACITY], flops[DSV3_FORMAT_CAPACITY];
    DSV3_LOG_INFO("config: %s (model %s, flavor %s): %s",
                  cfg->job.config_file[0] ? cfg->job.config_file : "built-in defaults",
                  cfg->model.name, cfg->model.flavor, cfg->job.description);
    DSV3_LOG_INFO("model: %s parameters in total, %s active per token (routed experts %s, "
                  "shared experts %s, routers %s)",
                  dsv3_format_count(counts.total, total), dsv3_format_count(counts.active, active),
                  dsv3_format_count(counts.routed_experts, routed),
                  dsv3_format_count(counts.shared_experts, shared),
                  dsv3_format_count(counts.router, router));
    DSV3_LOG_INFO(
        "model: %s training FLOPs per token at seq_len %" PRId64
        " (6 × active non-embedding parameters + 6 × n_layers × n_heads × "
        "(qk_nope + qk_rope + v head dims) × seq_len)",
        dsv3_format_count(dsv3_model_flops_per_token(&launch->model, cfg->training.seq_len), flops),
        cfg->training.seq_len);
    DSV3_LOG_INFO("layout: pp %" PRId64 " × dp_replicate %" PRId64 " × dp_shard %" PRId64
                  " × cp %" PRId64 " × tp %" PRId64 " = %" PRId64 " stage ranks; ep %" PRId64
                  " → %" PRId64 " expert servers (%s)",
                  dims->pp, dims->dp_replicate, dims->dp_shard, dims->cp, dims->tp, n_stage,
                  dims->ep, n_expert,
                  n_expert ? cfg->parallelism.expert_server_launch
                           : "routed experts on stage ranks");
    if (dims->dp_shard * dims->cp > 1)
        DSV3_LOG_INFO("layout: FSDP: parameters, gradients and optimizer state sharded over the "
                      "%" PRId64 " dp_shard × cp ranks of a pipeline stage%s, reshard after "
                      "forward: %s",
                      dims->dp_shard * dims->cp,
                      dims->dp_replicate > 1 ? " (HSDP: replicated over dp_replicate)" : "",
                      cfg->parallelism.fsdp_reshard_after_forward);
}

// `--job.print_config`: the effective config, as TOML that loads back to the same config.
static Dsv3Err print_config(const Dsv3Config *cfg) {
    char *text = NULL;
    DSV3_CALL(dsv3_config_to_toml(cfg, &text));
    printf("# effective config\n%s# end of effective config\n", text);
    fflush(stdout);
    dsv3_free(text);
    return DSV3_OK;
}

// The pipeline schedule: its shape and theoretical bubble, and with parallelism.print_schedule
// every pipeline rank's actions in order (several lines when long). Lines start with `prefix`.
static Dsv3Err log_schedule(const Dsv3Config *cfg, const Dsv3PlanOptions *opt, int64_t pp,
                            const char *prefix) {
    if (pp == 1) {
        DSV3_LOG_INFO("%s: no pipeline (pipeline_parallel_degree 1): each micro-batch's "
                      "forward, then its backward",
                      prefix);
        return DSV3_OK;
    }
    Dsv3PipeSchedule s;
    DSV3_CALL(dsv3_pipe_schedule_create(&s, opt->pipe.kind, pp, opt->pipe.n_micro,
                                        opt->pipe.stages_per_rank, opt->pipe.overlap_pairs));
    char over[96];
    if (s.stages_per_rank > 1)
        snprintf(over, sizeof over, "%" PRId64 " ranks with %" PRId64 " stages each", pp,
                 s.stages_per_rank);
    else
        snprintf(over, sizeof over, "%" PRId64 " stages", pp);
    DSV3_LOG_INFO("%s: %s, %" PRId64 " micro-batches × %" PRId64
                  " sequences over %s, theoretical bubble %.1f%%",
                  prefix, dsv3_pipe_kind_name(s.kind), s.n_micro, opt->pipe.micro_batch, over,
                  100.0 * dsv3_pipe_schedule_bubble(&s));
    if (s.kind == DSV3_PIPE_DUALPIPEV)
        DSV3_LOG_INFO("%s: %s", prefix,
                      s.overlap_pairs
                          ? "each pair (PF and the B after it) overlaps: each computes while the "
                            "other's routed rows are at the expert servers"
                          : "each pair (an F and the B after it) runs in turn: without expert "
                            "servers there is no exchange to hide");
    enum { LINE = 1024 };
    char line[LINE], action[32];
    for (int64_t r = 0; cfg->parallelism.print_schedule && r < pp; r++) {
        size_t used = 0;
        for (int64_t i = s.first[r]; i < s.first[r + 1]; i++) {
            dsv3_pipe_action_text(&s.actions[i], action, sizeof action);
            if (used + strlen(action) + 2 >= LINE) {
                DSV3_LOG_INFO("%s: rank %" PRId64 ":%s", prefix, r, line);
                used = 0;
            }
            used += (size_t)snprintf(line + used, LINE - used, " %s", action);
        }
        DSV3_LOG_INFO("%s: rank %" PRId64 ":%s", prefix, r, used ? line : "");
    }
    dsv3_pipe_schedule_destroy(&s);
    return DSV3_OK;
}

// `--job.dry_run`: every rank's share, from the config alone.
static Dsv3Err log_plan(const Dsv3Launch *launch, const Dsv3ParallelDims *dims) {
    int64_t n = 1 + dsv3_layout_stage_count(dims) + dsv3_layout_expert_count(dims);
    Dsv3PlanOptions opt;
    DSV3_CALL(dsv3_plan_options_from_config(&launch->config, &opt));
    char line[DSV3_PLAN_LINE_CAPACITY];
    for (int64_t r = 0; r < n; r++) {
        Dsv3RankShare share;
        DSV3_CALL(dsv3_plan_rank(&launch->model, dims, &opt, r, &share));
        dsv3_plan_describe(&share, line, sizeof line);
        DSV3_LOG_INFO("dry run: %s", line);
    }
    DSV3_CALL(log_schedule(&launch->config, &opt, dims->pp, "dry run: schedule"));
    DSV3_LOG_INFO("dry run: config and layout are valid; nothing was allocated");
    return DSV3_OK;
}

// Coordinator alone (`--print-launch`, or a dry run with no stage processes): resolves the
// layout for --nproc stage processes without building communicators.
static Dsv3Err serve_alone(Dsv3Launch *launch, const LaunchFlags *flags) {
    const Dsv3Config *cfg = &launch->config;
    Dsv3ParallelDims dims = config_dims(cfg);
    int64_t fixed = dims.pp * dims.dp_replicate * dims.cp * dims.tp;
    int64_t n_stage =
        flags->nproc ? flags->nproc : (dims.dp_shard > 0 ? fixed * dims.dp_shard : fixed);
    int64_t n_expert = dims.ep > 1 ? dims.pp * dims.ep : 0;
    DSV3_CALL(dsv3_layout_resolve(&dims, n_stage, n_expert));
    DSV3_CALL(check_batch(cfg, &dims));
    if (flags->print_launch) {
        // Shell-readable, for run/train.sh and run/expert_servers.sh.
        printf("stage_procs=%" PRId64 "\nexpert_procs=%" PRId64 "\nexpert_launch=%s\n"
               "expert_service=%s\ninit_timeout=%" PRId64 "\ndry_run=%d\n",
               n_stage, n_expert, cfg->parallelism.expert_server_launch,
               cfg->parallelism.expert_server_service, cfg->comm.init_timeout_seconds,
               cfg->job.dry_run ? 1 : 0);
        return DSV3_OK;
    }
    log_summary(launch, &dims, n_stage, n_expert);
    if (cfg->job.print_config) DSV3_CALL(print_config(cfg));
    return log_plan(launch, &dims);
}

// Collective over `comm`: the coordinator (its rank 0) sends its config as TOML text, every
// other rank parses it. On the coordinator *ok says whether its config loaded (it reported the
// error itself); on return *ok is that verdict on every rank.
static Dsv3Err share_config(Dsv3Launch *launch, MPI_Comm comm, int *ok) {
    char *text = NULL;
    Dsv3Err err = DSV3_OK;
    if (launch->role == DSV3_ROLE_COORDINATOR && *ok)
        DSV3_CALL(dsv3_config_to_toml(&launch->config, &text));
    DSV3_CALL_GOTO(err, done, broadcast_text(comm, ok, &text));
    if (*ok && launch->role != DSV3_ROLE_COORDINATOR)
        DSV3_CALL_GOTO(err, done, config_from_text(&launch->config, text));
done:
    dsv3_free(text);
    return err;
}

// The job communicator: the launched world, merged with joining expert servers when asked.
static Dsv3Err build_job_comm(Dsv3Launch *launch, const LaunchFlags *flags, MPI_Comm *job,
                              int *ok) {
    *ok = 1;
    if (flags->join) { // an expert server of its own job: the config comes over the merged comm
        DSV3_LOG_INFO("joining the training job through service '%s' (timeout %.0f s)", flags->join,
                      flags->join_timeout);
        DSV3_CALL(dsv3_job_comm_connect(flags->join, flags->join_timeout, job));
        DSV3_CALL(dsv3_job_comm_watch_join(flags->join_timeout, "the training job"));
        return share_config(launch, *job, ok);
    }
    MPI_Comm world = MPI_COMM_NULL;
    DSV3_CALL(dsv3_job_comm_world(&world));
    // The coordinator must be world rank 0 before it can send the config.
    int64_t n_stage = 0, n_expert = 0;
    Dsv3Err verdict = dsv3_roles_gather(world, launch->role, &n_stage, &n_expert);
    if (verdict != DSV3_OK) {
        int rank = 0;
        DSV3_MPI_CALL(MPI_Comm_rank(world, &rank));
        if (rank == 0) report(verdict, 1);
        DSV3_MPI_CALL(MPI_Comm_free(&world));
        *ok = 0;
        return DSV3_OK;
    }
    if (launch->role == DSV3_ROLE_COORDINATOR) {
        Dsv3Err load =
            coordinator_load_config(flags->config_argc, flags->config_argv, &launch->config);
        if (load != DSV3_OK) dsv3_launch_report(load);
        *ok = load == DSV3_OK;
    }
    DSV3_CALL(share_config(launch, world, ok));
    if (!*ok || strcmp(launch->config.parallelism.expert_server_launch, "join") != 0) {
        *job = world;
        return DSV3_OK;
    }
    const char *service = launch->config.parallelism.expert_server_service;
    double timeout = (double)launch->config.comm.init_timeout_seconds;
    if (launch->role == DSV3_ROLE_COORDINATOR)
        DSV3_LOG_INFO("waiting up to %.0f s for expert servers to join through service '%s' "
                      "(start them with ./run/expert_servers.sh)",
                      timeout, service);
    DSV3_CALL(dsv3_job_comm_accept(service, timeout, job));
    DSV3_CALL(dsv3_job_comm_watch_join(timeout, "the expert server job"));
    DSV3_MPI_CALL(MPI_Comm_free(&world));
    return share_config(launch, *job, ok); // the joined servers need it too
}

static Dsv3Err launch_start(Dsv3Role role, const LaunchFlags *flags, Dsv3Launch *launch) {
    double start = dsv3_log_seconds();
    int world_rank = 0, world_size = 0;
    DSV3_MPI_CALL(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank));
    DSV3_MPI_CALL(MPI_Comm_size(MPI_COMM_WORLD, &world_size));
    if (flags->help) {
        if (role == DSV3_ROLE_COORDINATOR && world_rank == 0) {
            char *help = NULL;
            DSV3_CALL(dsv3_config_help(&help));
            printf("usage: dsv3-coordinator [--job.config_file FILE] [--section.key VALUE ...]\n"
                   "       [--nproc N] [--print-launch]\n\nconfig keys:\n%s",
                   help);
            dsv3_free(help);
        }
        launch->status = DSV3_LAUNCH_DONE;
        return DSV3_OK;
    }

    // A coordinator started on its own plans a job instead of running one.
    if (role == DSV3_ROLE_COORDINATOR && world_size == 1) {
        Dsv3Err err =
            coordinator_load_config(flags->config_argc, flags->config_argv, &launch->config);
        if (err == DSV3_OK) {
            dsv3_model_args_from_config(&launch->config, &launch->model);
            DSV3_CHECK(
                flags->print_launch || launch->config.job.dry_run, DSV3_ERR_LAUNCH,
                "dsv3-coordinator was started without stage processes; launch it with "
                "`mpiexec -n 1 dsv3-coordinator … : -n S dsv3-stage …` (./run/train.sh does), "
                "or pass --job.dry_run --nproc S to plan a job of S stage processes");
            err = serve_alone(launch, flags);
        }
        if (err != DSV3_OK) {
            dsv3_launch_report(err);
            return DSV3_OK; // status stays FAILED: the error is reported
        }
        launch->status = DSV3_LAUNCH_DONE;
        return DSV3_OK;
    }
    DSV3_CHECK(!flags->print_launch, DSV3_ERR_USAGE,
               "--print-launch plans a job: start the coordinator alone");

    MPI_Comm job = MPI_COMM_NULL;
    int ok = 1;
    DSV3_CALL(build_job_comm(launch, flags, &job, &ok));
    double config_seconds = dsv3_log_seconds() - start;
    if (!ok) {
        if (job != MPI_COMM_NULL) DSV3_MPI_CALL(MPI_Comm_free(&job));
        return DSV3_OK; // the coordinator reported the config error
    }
    dsv3_model_args_from_config(&launch->config, &launch->model);

    // Roles and layout: every rank reaches the same verdict, job rank 0 prints it.
    Dsv3ParallelDims dims = config_dims(&launch->config);
    double topology_start = dsv3_log_seconds();
    Dsv3Err err = dsv3_topology_create(job, role, &dims, &launch->topology);
    double topology_seconds = dsv3_log_seconds() - topology_start;
    if (err == DSV3_OK) err = check_batch(&launch->config, &launch->topology.dims);
    int job_rank = 0;
    DSV3_MPI_CALL(MPI_Comm_rank(job, &job_rank));
    DSV3_MPI_CALL(MPI_Comm_free(&job));
    dsv3_log_init(dsv3_role_name(role), job_rank);
    if (err == DSV3_OK && flags->nproc && flags->nproc != launch->topology.n_stage)
        err = dsv3_error_raise(DSV3_ERR_USAGE, __FILE__, __LINE__, __func__,
                               "--nproc %" PRId64 " disagrees with the %" PRId64
                               " stage processes launched",
                               flags->nproc, launch->topology.n_stage);
    if (err != DSV3_OK) {
        // The launch or the config is at fault, not dsv3. A joined expert server job has a log of
        // its own: its first rank says why too.
        if (job_rank == 0 || (flags->join && world_rank == 0)) report(err, 1);
        return DSV3_OK;
    }

    if (role == DSV3_ROLE_COORDINATOR) {
        DSV3_LOG_INFO("start-up: config: read, checked and sent to every rank in %.2f s",
                      config_seconds);
        DSV3_LOG_INFO("start-up: topology: layout checked and communicators built in %.2f s",
                      topology_seconds);
        log_summary(launch, &launch->topology.dims, launch->topology.n_stage,
                    launch->topology.n_expert);
        if (!launch->config.job.dry_run && launch->topology.dims.pp > 1) {
            Dsv3PlanOptions opt;
            DSV3_CALL(dsv3_plan_options_from_config(&launch->config, &opt));
            DSV3_CALL(log_schedule(&launch->config, &opt, launch->topology.dims.pp,
                                   "layout: pipeline schedule"));
        }
        if (launch->config.job.print_config) DSV3_CALL(print_config(&launch->config));
        if (launch->config.job.dry_run) DSV3_CALL(log_plan(launch, &launch->topology.dims));
        DSV3_LOG_INFO("start-up: %d ranks ready in %.2f s", launch->topology.job_size,
                      dsv3_log_seconds() - start);
    }
    if (launch->config.job.dry_run) {
        launch->status = DSV3_LAUNCH_DONE;
        return DSV3_OK;
    }
    DSV3_CALL(dsv3_protocol_create(&launch->protocol, &launch->topology,
                                   (double)launch->config.comm.init_timeout_seconds,
                                   (double)launch->config.comm.train_timeout_seconds));
    launch->status = DSV3_LAUNCH_RUN;
    return DSV3_OK;
}

Dsv3Err dsv3_launch_start(Dsv3Role role, int argc, char **argv, Dsv3Launch *launch) {
    int world_rank = 0;
    DSV3_MPI_CALL(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank));
    dsv3_log_init(dsv3_role_name(role), world_rank);
    launch->role = role;
    launch->status = DSV3_LAUNCH_FAILED;
    LaunchFlags flags;
    Dsv3Err err = parse_flags(role, argc, argv, &flags);
    if (err == DSV3_OK) err = launch_start(role, &flags, launch);
    // A joined start-up is over (a failed one stays watched until the process ends).
    if (err == DSV3_OK && launch->status != DSV3_LAUNCH_FAILED) dsv3_job_comm_joined_ready();
    dsv3_free(flags.config_argv);
    DSV3_CALL(err);
    return DSV3_OK;
}

void dsv3_launch_finish(Dsv3Launch *launch) {
    dsv3_protocol_destroy(launch->protocol);
    launch->protocol = NULL;
    dsv3_topology_destroy(&launch->topology);
}
