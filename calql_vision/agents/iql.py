from calql_vision.agents.sac import SACAgent as IQLAgent
