"""django_dramatiq's way to keep a record per task, for `make bench`: three actors, each
enqueueing the next (`dramatiq.pipeline`), with `django_dramatiq.middleware.AdminMiddleware`
writing a `Task` row per message (enqueued, running, done) in the project's database."""
