"""Running the jobs: the job-kind registry (``kinds``), the job processes and their lanes (``worker``), the runner
interface, local or Ray (``runners``), the Ray dispatcher (``ray_runner``) and the CLI's foreground runs
(``foreground``). The only wing that names every kind; the kinds' modules live with their subjects below.
"""
