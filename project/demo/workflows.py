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
