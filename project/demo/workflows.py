"""The tutorial workflow: research a topic, wait for a human approval, then write the report.

beluga_workflows imports every installed app's `workflows.py`, so `research` can be started by
name from the REST API, the admin and `manage.py workflow start research ...`.
"""

from datetime import timedelta

from beluga_workflows import workflow


def research_activity(ctx: workflow.ActivityContext, topic):  # an activity: side effects live here
    return f"Research findings on {topic!r}: key insights discovered."


def report_activity(ctx, findings):
    return f"Final Report\n\n{findings}\n\nConclusion: Action recommended."


@workflow.defn(name="research")  # gives the workflow a public name (REST/admin/CLI start)
def research_workflow(ctx: workflow.WorkflowContext, topic):  # deterministic orchestration
    findings = ctx.execute_activity(
        research_activity,
        topic,
        workflow.with_activity_retry(
            workflow.RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=5))
        ),
        workflow.with_activity_timeout(timedelta(minutes=10)),
    )
    signal = ctx.wait_for_signal("approval", timedelta(hours=24))  # raises SignalTimeoutError
    if signal.payload is not True:
        return "Workflow rejected by reviewer."
    return ctx.execute_activity(
        report_activity, findings, workflow.with_activity_timeout(timedelta(minutes=5))
    )


# Fan out, approve, report: the second tutorial (README, "Fan out, approve, report").


def summarize_activity(ctx: workflow.ActivityContext, document):
    return f"{document}: revenue up, costs flat."


def batch_report_activity(ctx, summaries):
    lines = "\n".join(f"- {summary}" for summary in summaries)
    return f"Batch Report\n\n{lines}\n\nConclusion: Action recommended."


@workflow.defn(name="batch_report")
def batch_report_workflow(ctx: workflow.WorkflowContext, summaries):
    """The report, as a workflow of its own (a child of review_batch)."""
    return ctx.execute_activity(batch_report_activity, summaries)


@workflow.defn(name="review_batch")
def review_batch_workflow(ctx: workflow.WorkflowContext, documents):
    # Fan out: every summary is scheduled at once and runs in parallel on the workers.
    futures = [
        ctx.start_activity(
            summarize_activity, document, workflow.with_activity_timeout(timedelta(minutes=2))
        )
        for document in documents
    ]
    summaries = ctx.gather(*futures)  # fan in: results in the order of `documents`
    approval = ctx.wait_for_signal("approval", timedelta(days=2))  # a human decides
    if approval.payload is not True:
        return {"approved": False, "summaries": summaries}
    report = ctx.execute_child_workflow(  # a run of its own, linked to this one
        batch_report_workflow,
        workflow.WorkflowOptions(id=f"{ctx.workflow_id}-report", input=summaries),
    )
    return {"approved": True, "report": report}
