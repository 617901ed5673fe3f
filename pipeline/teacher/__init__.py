"""The listwise LLM teacher, grouped by what a window goes through.

    settings     what determines the rankings (TeacherSettings); one run's settings (TeacherJob)
    windows      the sliding window and the reference loop `rerank`
    prompts      templates and identifiers -> a window's chat messages
    render       chat template, token ids, prompt hash: a window's request
    replies      a reply read as a permutation (repairs counted), a refused prompt, the log record
    resume       continuing this run's reply log, or setting another run's aside
    reuse        replies already paid for (--reuse), and replay (replay:LOG)
    stats        OUT.stats.json and the budget
    driver       the reference loop for a run's queries, with the log, early submission,
                 refused prompts and the budget layered on it
    job          a TeacherJob to files: inputs checked, backend opened, run, log, stats; dry run
    scale_out    shards, Ray blocks and the deterministic merge
    recorded_replies   rank_llm's recorded replies -> a reply log (distillm ingest replies)
    backends/    vllm, openai, transformers behind one small interface

The reply log's format is the data contract's (`pipeline.contract.reply_log`).
"""
